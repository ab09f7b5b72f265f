"""Every code block of README.md and docs/*.md runs, as written, on generated data: each page in a fresh folder, its
blocks in order; `finfusion` commands in-process, python blocks executed, YAML blocks trained or parsed by the code
that reads them. The files, folders and datasets the examples name are generated stand-ins (docs_inputs.py), and
the runs are made small by appending sizes the example does not set itself (fewer epochs, batches, folds, trials,
seeds). What cannot run here is listed in NOT_RUN with the reason and where else it is tested; every command still
parses against the real command line (test_docs.py). The playbook pages run in their own tests."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from finfusion.cli import app
from tests import docs_inputs
from tests.movement_market import write_movement_market
from tests.test_docs import FENCE, PAGES, REPO, block_commands
from tests.test_families import MOVEMENT, MULTIMODAL, TINY, TRAINER, WALK_FORWARD
from tests.test_token_playbooks import TOKENS_SMALL

#: Commands (or their start, or a word in them) not run here, with the reason.
NOT_RUN: dict[str, str] = {
    "bash scripts/setup.sh": "the setup line: CI's own first step",
    "bash scripts/test.sh": "the test command: this suite",
    "finfusion quickstart": "tests/test_cli.py runs it (two symbols, one fold)",
    "bash scripts/results_": "regenerates a results page from the real data (an hour of CPU)",
    "finfusion data download": "fetches from the internet, only when asked (tests/test_sources.py: a local server)",
    "finfusion models download": "fetches published weights (tests/test_moirai_parity.py: a local server); a "
    "stand-in folder takes its place here",
    "finfusion serve api": "serves until stopped (tests/test_api.py serves it over real HTTP)",
    "mlflow ui": "serves until stopped (tests/test_tracking.py reads the store it opens)",
    "python benchmarks/": "a benchmark: minutes by design, run by hand and reported in the issues",
    "finfusion benchmark stocknet": "checks its samples against the published StockNet counts, so only the real "
    "data passes (the check: tests/test_acl18.py)",
    "ProsusAI/finbert": "a hub name, read only from the local Hugging Face cache, which holds no such model here",
    "trainer=gpu_": "needs a GPU",
}
#: Pages another test runs in order on generated data (its playbook blocks), and the blocks it runs.
PLAYBOOKS: dict[str, Callable[[str], bool]] = {
    "docs/token_models.md": lambda block: True,  # tests/test_token_playbooks.py
    "docs/relevance.md": lambda block: (
        block.split()[1] in ("train", "predict", "evaluate", "validate") or block.startswith("import")
    ),  # tests/test_relevance_playbook.py
}
#: Sizes appended to a command that trains (train, evaluate, sweep, serve job) by its experiment config.
SMALL: dict[str, list[str]] = {
    "patchtst_synthetic": ["model.d_model=16", "model.n_layers=1", *WALK_FORWARD],
    "cga_daily": ["task.k=2", "data.batch_size=16", "data.lookback=16"],
    "multimodal_tiny": [*MULTIMODAL, *WALK_FORWARD],
    "kdd17_walk_forward": [
        "model.d_model=16", "model.n_layers=1", *WALK_FORWARD, "evaluation.baselines=[random_walk,drift]",
    ],
    "moirai_synthetic": ["model.num_samples=8", "model.task.val_num_samples=4", *WALK_FORWARD],
    "moirai_pretrain_synthetic": [
        "data.synthetic.n_symbols=5", "data.synthetic.start=2016-01-01", "data.symbols=3", "data.stride=8",
        "model.num_samples=4", "task.val_num_samples=2", "evaluation.finetune_epochs=0",
        "evaluation.baselines=[{label: random_walk, part: random_walk, set: {quantile_levels: [0.1, 0.5, 0.9]}}]",
    ],
    "translob_synthetic": TINY["translob_synthetic"],
    "token_mlm_synthetic": TOKENS_SMALL,
    "token_direction_synthetic": [*TOKENS_SMALL, "data.window=8"],
    **{name: MOVEMENT for name in ("stocknet_price", "stocknet_text", "stocknet_fusion")},
    "movement_daily": TINY["movement_daily"],
}  # fmt: skip
#: Option values made small (the option's own value replaced).
SMALLER_VALUES = {"--trials": "2", "--seeds": "1", "--steps": "4", "--symbols": "4"}
#: The generated inputs of each page (functions of the page's working folder).
INPUTS: dict[str, list[Callable[[Path], None]]] = {
    "README.md": [
        lambda work: docs_inputs.shared_data(work.parent),
        docs_inputs.user_files,
        docs_inputs.ticks,
        docs_inputs.signals,
        docs_inputs.moirai_download,
        docs_inputs.live_service,
    ],
    "docs/data.md": [docs_inputs.macro_file],
    "docs/relevance.md": [docs_inputs.macro_file],
    "docs/embeddings.md": [
        lambda work: docs_inputs.shared_data(work.parent),
        docs_inputs.stocknet_lake,
        docs_inputs.news_dataset,
        docs_inputs.local_encoder,
    ],
    "docs/moirai.md": [docs_inputs.moirai_download],
    "docs/serving.md": [docs_inputs.live_service],
    "docs/movement.md": [write_movement_market],
}


def not_run(words: list[str]) -> str | None:
    text = " ".join(words).removeprefix(".venv/bin/")
    return next((why for start, why in NOT_RUN.items() if text.startswith(start) or f" {start}" in text), None)


def small(words: list[str]) -> list[str]:
    """`words` (after `finfusion`) made small: option values of SMALLER_VALUES replaced, and the config's SMALL
    sizes and the one-epoch trainer appended, except keys the command sets itself (and model sizes when it picks
    another model)."""
    words = [SMALLER_VALUES.get(words[i - 1], w) if i else w for i, w in enumerate(words)]
    command = words[:3] if words[0] == "serve" else words[:1]
    if command[0] == "explain" and "--steps" not in words:
        words = [*words, "--steps", "4"]
    serving = command in (["serve", "job", "train"], ["serve", "job", "finetune"], ["serve", "job", "predict"])
    config = words[words.index("--config") + 1] if "--config" in words else "cga_daily" if serving else None
    if command[0] == "benchmark":
        config = "stocknet_price"
    if config is None or config not in SMALL:
        return words
    own = {re.sub(r"^\+", "", w.split("=", 1)[0]) for w in words if "=" in w and not w.startswith("-")}
    picks_model = "model" in own
    extra = [
        o
        for o in [*SMALL[config], *([] if config.startswith(("stocknet", "movement")) else TRAINER)]
        if re.sub(r"^\+", "", o.split("=", 1)[0]) not in own and not (picks_model and o.startswith("model."))
    ]
    if serving:
        return [*words, *(w for o in extra for w in ("--set", o))]
    return [*words, *extra]


def run_command(words: list[str], page: str) -> str:
    program, *rest = words
    assert program in ("finfusion", ".venv/bin/finfusion"), f"{page}: `{' '.join(words)}` is not run and not listed"
    result = CliRunner().invoke(app, small(rest), catch_exceptions=False)
    assert result.exit_code == 0, f"{page}: `{' '.join(words)}` failed:\n{result.output}"
    return result.output


def run_yaml(text: str, work: Path) -> None:
    """A config block: a whole experiment (it has `defaults:`) trains as its own config file; a fragment (sections
    of top-level parts) trains added to patchtst_synthetic; a `sweep:` block is read by the sweep (test_docs.py)."""
    loaded = yaml.safe_load(text)
    if "sweep" in loaded:
        return
    if "defaults" in loaded:
        (work / "experiment.yaml").write_text(text, encoding="utf-8")
        run_command(["finfusion", "train", "--config", "experiment.yaml", *SMALL["patchtst_synthetic"]], "yaml")
        return
    sections = [f"+{top}.{key}={flow(value)}" for top, part in loaded.items() for key, value in part.items()]
    run_command(["finfusion", "train", "--config", "patchtst_synthetic", *sections], "yaml")


def flow(value: object) -> str:
    """`value` as one line of YAML (a Hydra override's value)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()


PAGE_NAMES = [p.relative_to(REPO).as_posix() for p in PAGES if p.relative_to(REPO).as_posix() != "docs/token_models.md"]


@pytest.mark.parametrize("page", PAGE_NAMES)
def test_every_block_of_the_page_runs(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("FINFUSION_LAKE", raising=False)
    text = (REPO / page).read_text(encoding="utf-8")
    for make in INPUTS.get(page, []):
        make(work)
    if page == "docs/report.md":
        docs_inputs.report_run(work, next(code for language, code in FENCE.findall(text) if language == "json"))
    if page == "docs/tokenizer.md":
        from finfusion.data.sources.synthetic import SyntheticConfig, generate_market

        namespace: dict[str, object] = {"bars": generate_market(SyntheticConfig(n_symbols=2)).bars}
    else:
        namespace = {}
    ran = 0
    covered = PLAYBOOKS.get(page, lambda block: False)
    for language, code in FENCE.findall(text):
        if covered(code):
            continue
        if language == "bash":
            for words in block_commands(code):
                if not_run(words) is None:
                    run_command(words, page)
                    ran += 1
        elif language == "python":
            exec(compile(code, page, "exec"), namespace)
            ran += 1
        elif language == "yaml":
            run_yaml(code, work)
            ran += 1
    assert ran > 0 or all(not_run(words) for words in documented(text)), f"{page}: nothing of it ran"


def documented(text: str) -> list[list[str]]:
    return [words for language, code in FENCE.findall(text) if language == "bash" for words in block_commands(code)]


def test_every_command_left_out_is_still_documented() -> None:
    commands = [words for page in PAGES for words in documented(page.read_text(encoding="utf-8"))]
    stale = [start for start in NOT_RUN if not any(not_run(words) == NOT_RUN[start] for words in commands)]
    assert stale == [], f"NOT_RUN entries no documented command needs: {stale}"
