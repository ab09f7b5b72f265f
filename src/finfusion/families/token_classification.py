"""The token-classification family: a BERT encoder over price-action tokens, started from a masked-LM run (the
tokens family) or from scratch, fine-tuned on direction, volatility-regime or trend/range labels (seed 001).

- Config: `data` (samples/token_labels.py CLASSIFICATION_DEFAULTS: the tokens dataset, the label set, the window of
  tokens, the horizon k, the vocabulary of a pre-training run, the price window and the texts), `model`
  (token_bert_classifier, `pretrained` RUN; token_fusion; patchtst_classifier), `task` (token_classification: the
  movement task's cross-entropy or focal loss, label smoothing), `optim`, `trainer`, `evaluation` (walk-forward
  folds, variants, pairs: families/token_walk_forward.py).
- Samples: `tokens` [W], `tokens_mask` [W], `label` [] (-1 ignored), `symbol_index`, `origin_us`; with
  `data.prices.enabled` `past` [L, C] and `past_mask` [L], with `data.texts.enabled` `text_emb` [N, D] and
  `text_mask` [N] (samples/token_fusion.py).
- State: split instants, universe, vocabulary, the label thresholds fitted on the training samples.
- Predictions: the lake's `classifications` table (dataset = run name).
- Evaluation: fine-tuning with selection on validation, each test block scored once (one block, or walk-forward
  folds), every variant on the same windows: accuracy, MCC and F1 against the majority class of the training span
  and, for direction, the previous k-bar sign, with paired tests (families/token_walk_forward.py).
- Explanations: the class of a window, or the tagger's tag of its last bar (families/token_classification_explain.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from omegaconf import DictConfig

from finfusion.errors import FinfusionError
from finfusion.families.base import (
    FREE,
    EvaluationResult,
    Family,
    FamilyData,
    LazySections,
    Progress,
    Sources,
    TableRows,
    shuffled_loader,
    trainer_keys,
)

if TYPE_CHECKING:
    import polars as pl

    from finfusion.data.lake import Lake
    from finfusion.families.pipeline import LoadedRun


def _data_keys() -> dict[str, Any]:
    from finfusion.samples.token_labels import CLASSIFICATION_DEFAULTS

    split = dict.fromkeys(("train", "val", "train_end", "val_end", "test_end"))
    return {**CLASSIFICATION_DEFAULTS, "split": split, "synthetic": FREE}


def _evaluation_keys() -> dict[str, Any]:
    from finfusion.families.token_walk_forward import EVALUATION_DEFAULTS, WALK_FORWARD_KEYS

    return {**EVALUATION_DEFAULTS, "walk_forward": dict.fromkeys(WALK_FORWARD_KEYS)}


@dataclass(frozen=True)
class ClassPredictions(TableRows):
    """Class predictions per (symbol, decision, label set) (see families/base.py Predictions)."""

    kind: ClassVar[str] = "classifications"
    what: ClassVar[str] = "class predictions"

    def summary(self) -> list[tuple[str, str]]:
        import polars as pl

        rows = self.rows
        known = rows.filter(pl.col("label").is_not_null() & (pl.col("label") >= 0))
        lines = [("decisions", f"{rows.height:,} over {rows['symbol'].n_unique():,} symbols")]
        if known.height:
            lines.append(("accuracy", f"{(known['predicted'] == known['label']).mean():.2%} of {known.height:,}"))
        return lines


class TokenClassificationFamily(Family):
    name = "token_classification"
    table = "classifications"
    tasks = ("token_classification", "token_tagging")
    spans = ("test", "val", "train")
    sections = LazySections(data=_data_keys, trainer=trainer_keys, evaluation=_evaluation_keys)

    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:
        import numpy as np
        import polars as pl

        from finfusion.data.calendar import to_us
        from finfusion.families.run_folder import STATE_FILE, read_json
        from finfusion.families.tokens import token_lake
        from finfusion.features.vocabulary import Vocabulary
        from finfusion.samples import token_labels as tl
        from finfusion.samples.portfolio import instant_us
        from finfusion.samples.tensors import TensorSamples
        from finfusion.samples.time_split import split_instants
        from finfusion.samples.token_fusion import TextSamples, price_windows, window_texts
        from finfusion.samples.token_sequences import vocabulary_of, vocabulary_state

        options = data_options(cfg)
        lake = token_lake(options)
        freq = str(options["freq"])
        symbols = options["symbols"] if state is None else state["symbols"]
        tokens = lake.read("tokens", str(options["dataset"]), freq=freq, symbols=symbols)
        bars = lake.read("bars", str(options["bars"]), freq=freq, symbols=symbols)
        if tokens.height == 0 or bars.height == 0:
            raise FinfusionError(f"no tokens or bars for the requested symbols in '{options['dataset']}'")
        if state is None:
            train_end, val_end = split_instants(options["split"], to_us(tokens["ts"]))
            test_end = options["split"].get("test_end")
            test_end = None if test_end is None else instant_us(test_end)
            if options["vocabulary"] is not None:
                vocabulary = vocabulary_of(read_json(Path(options["vocabulary"]), STATE_FILE))
            else:
                early = tokens.filter(pl.Series(to_us(tokens["ts"]) < train_end))
                vocabulary = Vocabulary.build(early["token"], min_freq=int(options["min_freq"]))
            universe = sorted(set(tokens["symbol"].to_list()) & set(bars["symbol"].to_list()))
        else:
            train_end, val_end = int(state["train_end_us"]), int(state["val_end_us"])
            test_end = state.get("test_end_us")  # absent in runs made before test blocks had an end: open
            vocabulary, universe = vocabulary_of(state), list(state["symbols"])
        window, horizon = int(options["window"]), int(options["horizon"])
        raw = tl.raw_windows(tokens, bars, vocabulary, universe, window, horizon, int(options["pivot_span"]))
        masks = tl.split_masks(raw, train_end, val_end, test_end)
        if state is None:
            train_returns = returns_before(bars, universe, train_end)
            state = {
                "train_end_us": train_end,
                "val_end_us": val_end,
                "test_end_us": test_end,
                "symbols": universe,
                "vocabulary": vocabulary_state(vocabulary),
                "thresholds": tl.fit_thresholds(raw, train_returns, masks["train"]),
            }
        tagging = str(options["label"]) == "pivots"
        label = None if tagging else tl.labels(raw, str(options["label"]), options, state["thresholds"])
        rows = np.arange(len(raw.origin_us))
        tensors = tl.window_tensors(raw, label, rows)
        arguments = {"vocab_size": len(vocabulary), "max_len": window, "pad_id": vocabulary.pad_id}
        prices, texts = options["prices"], options["texts"]
        if prices["enabled"]:
            tensors |= price_windows(bars, universe, raw.symbol_index, raw.origin_us, prices)
            arguments |= {"n_channels": len(prices["channels"]), "context_length": int(prices["lookback"])}
        everything: Any = TensorSamples(tensors)
        if texts["enabled"]:
            aligned = window_texts(lake, texts, str(options["bars"]), universe, raw.symbol_index, raw.origin_us)
            everything = TextSamples(everything, aligned, rows)
            arguments["text_dim"] = int(aligned.vectors.shape[1])
        return FamilyData(
            train=everything.subset(masks["train"]),
            val=everything.subset(masks["val"]),
            test=everything.subset(masks["test"]),
            loader=shuffled_loader(int(options["batch_size"]), int(options["num_workers"])),
            model_arguments=arguments,
            state=dict(state),
            extra={"options": options, "everything": everything, "forward": raw.forward, "masks": masks},
        )

    def predict(self, run: LoadedRun, span: str) -> ClassPredictions:
        return ClassPredictions(_rows(run, getattr(run.data, span)))

    def serving_config(
        self, cfg: DictConfig, lake: Lake, sources: Sources, train_end: datetime, val_end: datetime
    ) -> DictConfig:
        from omegaconf import OmegaConf, open_dict

        served = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        with open_dict(served):
            served.data.source, served.data.lake = "lake", str(lake.root)
            served.data.bars, served.data.freq = sources.bars, sources.freq
            served.data.split = {"train_end": train_end.isoformat(), "val_end": val_end.isoformat()}
        return served

    def predict_between(self, run: LoadedRun, start: datetime | None, end: datetime) -> pl.DataFrame:
        import numpy as np

        from finfusion.samples.contract import ORIGIN_US
        from finfusion.samples.portfolio import instant_us

        everything = run.data.extra["everything"]
        origins = everything.column(ORIGIN_US)
        first = np.iinfo(np.int64).min if start is None else instant_us(start)
        return _rows(run, everything.subset((origins > first) & (origins <= instant_us(end))))

    def explain(self, run: LoadedRun, symbol: str, day: date, span: str, steps: int, planted: bool) -> dict[str, Any]:
        from finfusion.families.token_classification_explain import explain_window

        if planted:
            raise FinfusionError(
                "--planted: the planted-news rate is measured on forecast runs, not token_classification runs"
            )
        return {"decision": explain_window(run.model, run.data, run.cfg, symbol, day, span, steps).as_dict()}

    def evaluate(self, cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
        from finfusion.families.token_walk_forward import evaluate_tokens

        return evaluate_tokens(cfg, run_dir, progress)


def data_options(cfg: DictConfig) -> dict[str, Any]:
    """The data part over CLASSIFICATION_DEFAULTS, as a plain dict."""
    from omegaconf import OmegaConf

    from finfusion.config import plain
    from finfusion.samples.token_labels import CLASSIFICATION_DEFAULTS

    merged = OmegaConf.merge(OmegaConf.create(CLASSIFICATION_DEFAULTS), OmegaConf.create(plain(cfg.data)))
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def decision_instants(cfg: DictConfig) -> Any:
    """The distinct instants [T] (UTC µs, sorted) of the tokens the data part reads: the periods of walk-forward."""
    import numpy as np

    from finfusion.data.calendar import to_us
    from finfusion.families.tokens import token_lake

    options = data_options(cfg)
    lake = token_lake(options)
    tokens = lake.read("tokens", str(options["dataset"]), freq=str(options["freq"]), symbols=options["symbols"])
    if tokens.height == 0:
        raise FinfusionError(f"no tokens for the requested symbols in '{options['dataset']}'")
    return np.unique(to_us(tokens["ts"]))


def _rows(run: LoadedRun, dataset: Any) -> pl.DataFrame:
    """The classifications rows of a classifier, or of a tagger (the tag of each window's last bar)."""
    return _tag_rows(run, dataset) if str(run.data.extra["options"]["label"]) == "pivots" else _class_rows(run, dataset)


def _decoded(run: LoadedRun, dataset: Any) -> tuple[list[list[int]], Any, Any]:
    """The tagger's Viterbi paths of every window, its probability of a pivot at the last bar [N] and the tags."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from finfusion.samples.windows import collate

    run.model.eval()
    paths, pivot, tags = [], [], []
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=256, shuffle=False, collate_fn=collate):
            paths += run.model.decode(batch)
            last = torch.softmax(run.model(batch)["logits"][:, -1].float(), dim=-1)
            pivot.append(1.0 - last[:, 0].numpy())
            tags.append(batch["tags"].numpy())
    return paths, np.concatenate(pivot) if pivot else np.zeros(0), np.concatenate(tags) if tags else np.zeros((0, 0))


def _tag_rows(run: LoadedRun, dataset: Any) -> pl.DataFrame:
    """CLASSIFICATIONS rows of a tagger: per window, the decoded tag of its last bar (0 none, 1 swing high, 2 swing
    low), prob_positive = the probability of a pivot there, label = the bar's tag when known."""
    import numpy as np

    paths, pivot, tags = _decoded(run, dataset)
    last = tags[:, -1] if len(tags) else np.zeros(0, dtype=np.int64)
    predicted = np.array([path[-1] for path in paths], dtype=np.int64)
    return classification_frame(
        run.data.state["symbols"], dataset.column("symbol_index"), dataset.column("origin_us"), "pivots", pivot,
        predicted, last,
    )  # fmt: skip


def tagging_result(run: LoadedRun) -> EvaluationResult:
    """Tag accuracy, macro F1 and MCC over every known bar of the test windows, against tagging every bar `none`;
    the decoded paths are checked against the forbidden transitions."""
    from itertools import pairwise

    import numpy as np

    from finfusion.evaluation.classification import class_metrics

    paths, _, tags = _decoded(run, run.data.test)
    predicted = np.concatenate([np.asarray(path) for path in paths]) if paths else np.zeros(0, dtype=np.int64)
    truth = tags.reshape(-1)
    known = truth >= 0
    if not known.any():
        raise FinfusionError("the test span has no tagged bars")
    forbidden = {tuple(int(x) for x in pair) for pair in run.cfg.model.get("forbidden", [[1, 1], [2, 2]])}
    broken = sum(1 for path in paths for a, b in pairwise(path) if (a, b) in forbidden)
    name = str(run.cfg.model.name)
    models = {
        name: class_metrics(truth[known], predicted[known]),
        "none": class_metrics(truth[known], np.zeros(int(known.sum()), dtype=np.int64)),
    }
    notes = (
        f"test span scored once: {int(known.sum()):,} tagged bars in {len(paths):,} windows; selection on validation",
        f"decoded paths through a forbidden transition: {broken}",
    )
    return EvaluationResult(models=models, baselines=("none",), notes=notes)


def returns_before(bars: Any, universe: list[str], end_us: int) -> Any:
    """One-bar log returns of the universe's bars before `end_us` (the training span's), for the trend scale."""
    import numpy as np
    import polars as pl

    from finfusion.data.calendar import to_us

    factor = pl.col("adj_factor").fill_null(1.0) if "adj_factor" in bars.columns else pl.lit(1.0)
    chosen = bars.filter(pl.col("symbol").is_in(universe)).sort("symbol", "ts")
    chosen = chosen.filter(pl.Series(to_us(chosen["ts"]) < end_us))
    returns = chosen.select(((pl.col("close") * factor).log().diff().over("symbol")).alias("r"))["r"].to_numpy()
    return returns[np.isfinite(returns)]


def classification_frame(
    symbols: list[str],
    symbol_index: Any,
    origin_us: Any,
    label_set: str,
    prob_positive: Any,
    predicted: Any,
    label: Any,
) -> pl.DataFrame:
    """CLASSIFICATIONS rows from per-decision arrays [N] (a negative label is unknown: null)."""
    import numpy as np
    import polars as pl

    from finfusion.data.calendar import from_us
    from finfusion.data.schema import CLASSIFICATIONS

    rows = pl.DataFrame(
        {
            "symbol": np.asarray(symbols, dtype=object)[symbol_index].tolist(),
            "origin_ts": from_us(np.asarray(origin_us, dtype=np.int64), "origin_ts"),
            "label_set": label_set,
            "prob_positive": np.asarray(prob_positive, dtype=np.float64),
            "predicted": np.asarray(predicted, dtype=np.int64),
            "label": pl.Series([int(x) if x >= 0 else None for x in label], dtype=pl.Int64),
        }
    )
    return CLASSIFICATIONS.conform(rows)


def class_rows(model: Any, dataset: Any, symbols: list[str], label_set: str) -> pl.DataFrame:
    """CLASSIFICATIONS rows of a classifier returning `logits` [B, K] over `dataset` (samples with `label`):
    prob_positive = the softmax of the last class (up), predicted = the most likely class."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from finfusion.samples.windows import collate

    model.eval()
    parts: dict[str, list[Any]] = {"prob": [], "label": [], "origin_us": [], "symbol_index": []}
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=256, shuffle=False, collate_fn=collate):
            parts["prob"].append(torch.softmax(model(batch)["logits"].float(), dim=-1).numpy())
            for key in ("label", "origin_us", "symbol_index"):
                parts[key].append(batch[key].numpy())
    if not parts["prob"]:
        empty = np.zeros(0, dtype=np.int64)
        return classification_frame(symbols, empty, empty, label_set, empty, empty, empty)
    prob, label, origin, index = (np.concatenate(parts[key]) for key in ("prob", "label", "origin_us", "symbol_index"))
    return classification_frame(symbols, index, origin, label_set, prob[:, -1], prob.argmax(axis=1), label)


def _class_rows(run: LoadedRun, dataset: Any) -> pl.DataFrame:
    """CLASSIFICATIONS rows of the run's classifier over `dataset`."""
    return class_rows(run.model, dataset, run.data.state["symbols"], str(run.data.extra["options"]["label"]))


FAMILY = TokenClassificationFamily()
