"""The command line starts without the model stack: `data list` and every help page leave torch & co. unimported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "lightning", "transformers", "sentence_transformers", "exchange_calendars", "uvicorn", "fastapi")

PROBE = """
import json, sys
from typer.main import get_command
from typer.testing import CliRunner
from finfusion.cli import app

def leaves(command, path):
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [path]
    return [path, *(leaf for name, sub in subcommands.items() for leaf in leaves(sub, [*path, name]))]

runner = CliRunner()
outcomes = {" ".join(path) or "finfusion": runner.invoke(app, [*path, "--help"]).exit_code
            for path in leaves(get_command(app), [])}
listed = runner.invoke(app, ["data", "list", "--lake", sys.argv[1]])
outcomes["data list"] = listed.exit_code
print(json.dumps({"outcomes": outcomes, "output": listed.output,
                  "loaded": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def test_help_and_data_list_import_no_heavy_library(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(lake)], capture_output=True, text=True, check=True, timeout=300
    )
    report = json.loads(probe.stdout.splitlines()[-1])
    assert report["outcomes"], "no commands found"
    assert all(code == 0 for code in report["outcomes"].values()), report["outcomes"]
    assert "kind" in report["output"] and "dataset" in report["output"]
    assert [name for name in HEAVY if name in report["loaded"]] == []
