"""Masked-LM pre-training on price-action tokens (issue 19, part 1): random-length chunks, BERT over a planted
grammar, the training-span vocabulary and point-in-time spans, and weights with tied embeddings saved and loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from omegaconf import OmegaConf

from finfusion.data.lake import Lake
from finfusion.data.schema import TOKENS
from finfusion.families.tokens import FAMILY
from finfusion.models.build import load_model_state, save_model_state
from finfusion.models.token_bert import TokenBert
from finfusion.samples.masked_lm import LengthBucketSampler, MaskedTokenDataset, pad_collate
from finfusion.training.masked_lm_task import MaskedLMTask

VOCAB, MASK_ID, SPECIALS = 24, 2, (0, 1, 2, 3)


def grammar_stream(n: int, seed: int) -> torch.Tensor:
    """Ids 4..23 in motifs: after id a comes a + 1 (wrapping within 4..23) 90% of the time, else a random id."""
    rng = np.random.default_rng(seed)
    ids = [4]
    for _ in range(n - 1):
        ids.append(4 + (ids[-1] - 3) % 20 if rng.random() < 0.9 else int(rng.integers(4, VOCAB)))
    return torch.tensor(ids, dtype=torch.int64)


def test_random_length_chunks_cover_each_symbol_in_order_within_the_bounds() -> None:
    sequences = {"A": torch.arange(4, 200) % 20 + 4, "B": torch.arange(4, 90) % 20 + 4}
    data = MaskedTokenDataset(sequences, max_len=32, vocab_size=VOCAB, mask_id=MASK_ID, special_ids=SPECIALS,
                              min_len=8, random_lengths=True, seed=3)  # fmt: skip
    lengths = data.lengths
    assert lengths.min() >= 8 and lengths.max() <= 32 and len(set(lengths.tolist())) > 5
    assert [next(start for s, start, _ in data.bounds if s == i) for i in (0, 1)] == [0, 0]
    covered = [stop - start for s, start, stop in data.bounds if s == 0]
    assert sum(covered) >= len(sequences["A"]) - 8  # only a last piece shorter than min_len is left out
    again = MaskedTokenDataset(sequences, max_len=32, vocab_size=VOCAB, mask_id=MASK_ID, special_ids=SPECIALS,
                               min_len=8, random_lengths=True, seed=3)  # fmt: skip
    assert again.bounds == data.bounds


def test_the_masked_lm_loss_falls_far_below_the_unigram_on_a_planted_grammar() -> None:
    torch.manual_seed(0)
    train = MaskedTokenDataset({"A": grammar_stream(4000, 0)}, max_len=32, vocab_size=VOCAB, mask_id=MASK_ID,
                               special_ids=SPECIALS, min_len=16, random_lengths=True, mask_prob=0.3)  # fmt: skip
    held_out = MaskedTokenDataset({"B": grammar_stream(1000, 1)}, max_len=32, vocab_size=VOCAB, mask_id=MASK_ID,
                                  special_ids=SPECIALS, min_len=16, random_lengths=True)  # fmt: skip
    model = TokenBert(VOCAB, max_len=32, hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128, dropout=0.0)
    task = MaskedLMTask(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def held_out_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(task._step(pad_collate([held_out[i] for i in range(len(held_out))]))[0])

    before = held_out_loss()
    sampler = LengthBucketSampler(train.lengths, batch_size=16, bucket_width=4, seed=0)
    model.train()
    for step in range(250):
        epoch, batch = divmod(step, len(sampler))
        train.set_epoch(epoch)
        sampler.set_epoch(epoch)
        loss = task._step(pad_collate([train[i] for i in sampler.batches()[batch]]))[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    unigram = float(np.log(20))  # 20 equally frequent ids: the best a model blind to context can do, in nats
    assert after < before - 0.5 and after < 0.6 * unigram, (before, after)


def token_lake(root: Path, shift_after: str | None = None) -> Lake:
    """A tokens dataset of 3 symbols over 2020-2021 (daily), its tokens after `shift_after` replaced."""
    lake = Lake(root)
    first, last = pl.datetime(2020, 1, 1, 21, time_zone="UTC"), pl.datetime(2021, 12, 31, 21, time_zone="UTC")
    days = pl.datetime_range(first, last, "1d", eager=True)
    rows = []
    for k, symbol in enumerate(("AAA", "BBB", "CCC")):
        ids = grammar_stream(len(days), k).numpy()
        rows.append(pl.DataFrame({"symbol": symbol, "ts": days, "token": [f"t{i}" for i in ids]}))
    frame = pl.concat(rows)
    if shift_after is not None:
        late = pl.col("ts") >= pl.lit(shift_after).str.to_datetime(time_zone="UTC")
        frame = frame.with_columns(pl.when(late).then(pl.lit("never_seen")).otherwise("token").alias("token"))
    lake.write(TOKENS, "toks", frame, freq="1d", metadata={"source": "test"})
    return lake


def _cfg(lake: Lake) -> object:
    split = {"train_end": "2021-01-01", "val_end": "2021-07-01"}
    data = {"lake": str(lake.root), "dataset": "toks", "min_len": 8, "max_len": 32, "min_freq": 2, "split": split}
    return OmegaConf.create({"data": data})


def test_the_vocabulary_and_training_chunks_never_see_the_later_tokens(tmp_path: Path) -> None:
    plain = FAMILY.data(_cfg(token_lake(tmp_path / "a")))
    changed = FAMILY.data(_cfg(token_lake(tmp_path / "b", shift_after="2021-01-01")))
    assert plain.state == changed.state  # the vocabulary is fitted on the training span only
    assert "never_seen" not in plain.extra["vocabulary"]
    for i in range(len(plain.train)):
        torch.testing.assert_close(plain.train[i], changed.train[i])
    unk = changed.extra["vocabulary"].unk_id
    assert all((changed.test[i]["tokens"][changed.test[i]["labels"] == -100] == unk).all() for i in range(3))


def test_tied_embeddings_are_saved_once_and_restored(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TokenBert(VOCAB, max_len=16, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    save_model_state(model, tmp_path)
    other = load_model_state(TokenBert(VOCAB, max_len=16, hidden_size=16, num_layers=1, num_heads=2,
                                       intermediate_size=32), tmp_path)  # fmt: skip
    batch = pad_collate([{"tokens": torch.arange(4, 12), "tokens_mask": torch.ones(8, dtype=torch.bool),
                          "labels": torch.arange(4, 12), "symbol_index": torch.tensor(0)}])  # fmt: skip
    model.eval()
    torch.testing.assert_close(model(batch)["logits"], other(batch)["logits"])
    decoder = other.bert.cls.predictions.decoder.weight
    assert decoder.data_ptr() == other.bert.bert.embeddings.word_embeddings.weight.data_ptr()


def test_an_unknown_preset_is_named() -> None:
    with pytest.raises(Exception, match="unknown preset 'huge'"):
        TokenBert(VOCAB, max_len=16, preset="huge")
