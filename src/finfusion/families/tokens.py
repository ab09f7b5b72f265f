"""The tokens family: masked-LM pre-training of a BERT encoder on price-action tokens (Brooks tokens or VQ codes) of
the lake (seed 001, the token track).

- Config: `data` (samples/token_sequences.py TOKEN_DEFAULTS), `model` (token_bert), `task` (masked_lm), `optim`,
  `trainer`, `evaluation` (nothing to set yet).
- Samples: BERT-masked chunks (80/10/10) of each symbol's token ids in time order, batched by length buckets
  (samples/masked_lm.py): `tokens` [L], `labels` [L], `symbol_index`; padded per batch with `tokens_mask`.
- State: the split instants, the universe and the vocabulary fitted on the training span (it travels with the run).
- Predictions: the lake's `token_scores` table (dataset = run name): per chunk of a span, the masked positions, how
  many the model restored and their mean surprisal.
- Evaluation: pre-training with selection on validation, then the test chunks scored once against the unigram
  baseline (training frequencies): masked accuracy and perplexity, Diebold-Mariano on the per-chunk surprisal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
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
    trainer_keys,
)

if TYPE_CHECKING:
    import polars as pl

    from finfusion.data.lake import Lake
    from finfusion.families.pipeline import LoadedRun


def _data_keys() -> dict[str, Any]:
    from finfusion.samples.token_sequences import TOKEN_DEFAULTS

    return {**TOKEN_DEFAULTS, "split": dict.fromkeys(("train", "val", "train_end", "val_end")), "synthetic": FREE}


@dataclass(frozen=True)
class TokenScores(TableRows):
    """Masked-LM scores per chunk (see families/base.py Predictions)."""

    kind: ClassVar[str] = "token_scores"
    what: ClassVar[str] = "token scores"

    def summary(self) -> list[tuple[str, str]]:
        rows = self.rows
        masked = int(rows["masked"].sum())
        restored = int(rows["restored"].sum())
        lines = [("chunks", f"{rows.height:,} over {rows['symbol'].n_unique():,} symbols, {masked:,} masked tokens")]
        if masked:
            lines.append(("masked accuracy", f"{restored / masked:.2%}"))
        return lines


class TokensFamily(Family):
    name = "tokens"
    table = "token_scores"
    tasks = ("masked_lm",)
    spans = ("test", "val", "train")
    sections = LazySections(data=_data_keys, trainer=trainer_keys, evaluation=lambda: {})

    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:
        from functools import partial

        import polars as pl
        from omegaconf import OmegaConf
        from torch.utils.data import DataLoader

        from finfusion.config import plain
        from finfusion.data.calendar import to_us
        from finfusion.features.vocabulary import Vocabulary
        from finfusion.samples.masked_lm import LengthBucketSampler, pad_collate
        from finfusion.samples.time_split import split_instants
        from finfusion.samples.token_sequences import (
            TOKEN_DEFAULTS,
            span_tokens,
            vocabulary_of,
            vocabulary_state,
        )

        merged = OmegaConf.merge(OmegaConf.create(TOKEN_DEFAULTS), OmegaConf.create(plain(cfg.data)))
        options = OmegaConf.to_container(merged, resolve=True)
        lake = token_lake(options)
        symbols = options["symbols"] if state is None else state["symbols"]
        frame = lake.read("tokens", str(options["dataset"]), freq=str(options["freq"]), symbols=symbols)
        if frame.height == 0:
            raise FinfusionError(f"tokens dataset '{options['dataset']}' has no rows for the requested symbols")
        ts = to_us(frame["ts"])
        if state is None:
            train_end, val_end = split_instants(options["split"], ts)
            train_tokens = frame["token"].filter(pl.Series(ts < train_end))
            vocabulary = Vocabulary.build(train_tokens, min_freq=int(options["min_freq"]))
            state = {
                "train_end_us": train_end,
                "val_end_us": val_end,
                "symbols": sorted(frame["symbol"].unique().to_list()),
                "vocabulary": vocabulary_state(vocabulary),
            }
        train_end, val_end = int(state["train_end_us"]), int(state["val_end_us"])
        vocabulary = vocabulary_of(state)
        spans = {
            "train": span_tokens(frame, vocabulary, options, None, train_end),
            "val": span_tokens(frame, vocabulary, options, train_end, val_end),
            "test": span_tokens(frame, vocabulary, options, val_end, None),
        }
        batch_size, workers, width = (
            int(options["batch_size"]),
            int(options["num_workers"]),
            int(options["bucket_width"]),
        )
        collate = partial(pad_collate, pad_id=vocabulary.pad_id)

        def loader(dataset: Any, shuffle: bool = False, seed: int = 0) -> DataLoader:
            # batches of similar lengths (padded to their longest); their order is a function of (seed, epoch)
            sampler = LengthBucketSampler(dataset.lengths, batch_size, width, seed=seed if shuffle else 0)
            return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate)

        return FamilyData(
            train=spans["train"].dataset,
            val=spans["val"].dataset,
            test=spans["test"].dataset,
            loader=loader,
            model_arguments={
                "vocab_size": len(vocabulary),
                "max_len": int(options["max_len"]),
                "pad_id": vocabulary.pad_id,
            },
            state=dict(state),
            extra={"options": options, "spans": spans, "vocabulary": vocabulary, "lake": lake},
        )

    def predict(self, run: LoadedRun, span: str) -> TokenScores:
        from finfusion.evaluation.masked_lm import model_chunk_scores

        tokens = run.data.extra["spans"][span]
        scores = model_chunk_scores(run.model, tokens.dataset, run.data.extra["vocabulary"].pad_id)
        return TokenScores(_score_rows(tokens, scores))

    def serving_config(
        self, cfg: DictConfig, lake: Lake, sources: Sources, train_end: datetime, val_end: datetime
    ) -> DictConfig:
        raise FinfusionError("a masked-LM pre-training run has nothing to serve: fine-tune it for a task first")

    def predict_between(self, run: LoadedRun, start: datetime | None, end: datetime) -> pl.DataFrame:
        raise FinfusionError("a masked-LM pre-training run has nothing to serve: fine-tune it for a task first")

    def evaluate(self, cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
        from finfusion.evaluation.masked_lm import model_chunk_scores, unigram_chunk_scores
        from finfusion.evaluation.significance import diebold_mariano
        from finfusion.families.pipeline import train_run

        progress(f"pre-training {cfg.model.name} (selection on validation) into {run_dir / 'model'}")
        run = train_run(cfg, run_dir / "model", resume="never")
        vocabulary = run.data.extra["vocabulary"]
        test = run.data.test
        ours = model_chunk_scores(run.model, test, vocabulary.pad_id)
        counts = {vocabulary.stoi[token]: count for token, count in vocabulary.counts.items() if token in vocabulary}
        unigram = unigram_chunk_scores(counts, len(vocabulary), test)
        test_dm = diebold_mariano(
            ours.bits / ours.masked.clip(min=1), unigram.bits / unigram.masked.clip(min=1), alternative="less"
        )
        name = str(cfg.model.name)
        models = {
            name: {"masked_accuracy": ours.accuracy(), "perplexity": ours.perplexity()},
            "unigram": {"masked_accuracy": unigram.accuracy(), "perplexity": unigram.perplexity()},
        }
        notes = (
            f"test chunks: {len(test):,} ({int(ours.masked.sum()):,} masked tokens), scored once; selection on "
            "validation; the unigram baseline is the training span's token frequencies",
            f"Diebold-Mariano (surprisal per chunk) {name} vs unigram: p = {test_dm.p_value:.4f}",
        )
        difference = {"difference": test_dm.mean_difference, "p_value": test_dm.p_value}

        def page(path: Path, command: str, title: str) -> Path:
            from finfusion.evaluation.classification import write_class_page

            what = "Diebold-Mariano on the mean surprisal per chunk, bits; negative: lower"
            return write_class_page(path, command, title, models, name, [("unigram", difference)], notes, what)

        return EvaluationResult(models=models, baselines=("unigram",), notes=notes, write_page=page)


def token_lake(options: Mapping[str, Any]) -> Lake:
    """The lake, with the synthetic bars made and tokenized first when the source is synthetic and they are absent."""
    from finfusion.data.lake import Lake
    from finfusion.data.schema import TOKENS
    from finfusion.forecasting.data import ensure_bars

    if options["source"] == "synthetic":
        lake = ensure_bars({**options, "dataset": options["bars"]})
        if not lake.files("tokens", str(options["dataset"]), str(options["freq"])):
            if options["tokenizer"] != "brooks":
                raise FinfusionError("data.tokenizer: the synthetic source tokenizes with 'brooks' only")
            from finfusion.features.brooks import tokenize_bars

            bars = lake.read("bars", str(options["bars"]), freq=str(options["freq"]))
            metadata = {"source": "brooks", "bars": str(options["bars"]), "tokenizer": "brooks"}
            lake.write(
                TOKENS, str(options["dataset"]), tokenize_bars(bars), freq=str(options["freq"]), metadata=metadata
            )
        return lake
    lake = Lake(options["lake"])
    if not lake.files("tokens", str(options["dataset"]), str(options["freq"])):
        raise FinfusionError(
            f"the lake has no tokens dataset '{options['dataset']}' ({options['freq']}): make it with "
            "`finfusion tokenize brooks BARS` or `finfusion vq encode`"
        )
    return lake


def _score_rows(tokens: Any, scores: Any) -> pl.DataFrame:
    """TOKEN_SCORES rows of a span's chunks."""
    import numpy as np
    import polars as pl

    from finfusion.data.calendar import from_us
    from finfusion.data.schema import TOKEN_SCORES

    bounds = tokens.dataset.bounds
    names = tokens.dataset.symbols
    first = np.array([tokens.instants[s][start] for s, start, _ in bounds], dtype=np.int64)
    last = np.array([tokens.instants[s][stop - 1] for s, _, stop in bounds], dtype=np.int64)
    masked = scores.masked.astype(np.int64)
    rows = pl.DataFrame(
        {
            "symbol": [names[s] for s, _, _ in bounds],
            "first_ts": from_us(first, "first_ts"),
            "last_ts": from_us(last, "last_ts"),
            "tokens": np.array([stop - start for _, start, stop in bounds], dtype=np.int64),
            "masked": masked,
            "restored": scores.hits.astype(np.int64),
            "surprisal_bits": np.where(masked > 0, scores.bits / np.maximum(masked, 1), np.nan),
        }
    ).with_columns(pl.col("surprisal_bits").fill_nan(None))
    return TOKEN_SCORES.conform(rows)


FAMILY = TokensFamily()
