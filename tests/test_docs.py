"""The documentation's code blocks stay true: every `finfusion` command in README.md and docs/*.md parses against
the real command line (subcommands, options, arguments and their types), every YAML block is valid YAML and every
`sweep:` block a valid search space, and every other shell line runs a script that exists. (Generated results pages,
docs/results/, are outputs, not examples.) The playbooks' commands are also executed on generated data:
tests/test_token_playbooks.py, tests/test_relevance_playbook.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml
from omegaconf import OmegaConf
from typer.main import get_command

from finfusion.cli import app
from finfusion.families.sweep import sweep_options

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
#: Shell lines that are not finfusion commands: the programs they may start.
OTHER_PROGRAMS = {"bash", "mlflow", ".venv/bin/python", ".venv/bin/finfusion", "python"}


def blocks() -> list[tuple[str, str, str]]:
    """(page, language, text) of every fenced block."""
    return [
        (page.relative_to(REPO).as_posix(), language, text)
        for page in PAGES
        for language, text in FENCE.findall(page.read_text(encoding="utf-8"))
    ]


def block_commands(text: str) -> list[list[str]]:
    """The commands of one bash block, as words (`&&` chains split, continued lines joined, comments dropped)."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, "&&"]:
            if word == "&&":
                if command:
                    found.append(command)
                command = []
            else:
                command.append(word)
    return found


def shell_commands() -> list[tuple[str, list[str]]]:
    """(page, words) of every command of every bash block."""
    return [(page, words) for page, language, text in blocks() if language == "bash" for words in block_commands(text)]


def parse(words: list[str]) -> None:
    """Parse `words` (after `finfusion`) down to the leaf command, as the real command line would."""
    command: click.Command = get_command(app)
    ctx = command.make_context("finfusion", list(words), resilient_parsing=False)
    while isinstance(command, click.Group):
        name, sub, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        assert sub is not None and name is not None
        command, ctx = sub, sub.make_context(name, rest, parent=ctx)


COMMANDS = shell_commands()


@pytest.mark.parametrize(("page", "words"), COMMANDS, ids=[f"{p}:{' '.join(w)[:60]}" for p, w in COMMANDS])
def test_every_documented_command_parses(page: str, words: list[str]) -> None:
    program = words[0]
    if program in ("finfusion", ".venv/bin/finfusion"):
        try:
            parse(words[1:])
        except click.exceptions.Exit:
            pass  # --help / --version
        except click.ClickException as exc:
            pytest.fail(f"{page}: `{' '.join(words)}`: {exc.format_message()}")
        return
    assert program in OTHER_PROGRAMS, f"{page}: `{' '.join(words)}` starts an unknown program"
    scripts = [word for word in words[1:] if word.endswith((".sh", ".py"))]
    assert all((REPO / script).is_file() for script in scripts), f"{page}: `{' '.join(words)}`: no such script"


def test_every_yaml_block_is_valid_and_sweep_blocks_are_search_spaces() -> None:
    checked = 0
    for page, language, text in blocks():
        if language != "yaml":
            continue
        loaded = yaml.safe_load(text)
        assert isinstance(loaded, dict), f"{page}: a YAML block that is not a mapping"
        if "sweep" in loaded:
            sweep_options(OmegaConf.create(loaded))
        checked += 1
    assert checked > 0


def test_every_block_names_its_language() -> None:
    unnamed = [page for page, language, _ in blocks() if not language]
    assert unnamed == [], f"code blocks without a language (bash, yaml, text, ...): {unnamed}"
