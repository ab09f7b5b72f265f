"""Explanations of a token-classification run's decision (`finfusion explain RUN --at SYMBOL:DATE`): a BERT sequence
classifier's class (token_bert_classifier), or a BERT + CRF tagger's tag of the window's last bar (token_bert_tagger).

Shapes: W tokens in the window (0 = oldest, the decision's bar last), E the embedding width, K classes or tags.

The explained output is the probability of the predicted class (softmax of the classifier's logits [B, K]); for the
tagger, the CRF's marginal probability that the last bar has the tag Viterbi decoded for it (`last_tag_marginals`,
the forbidden transitions barred as in decoding): the tag the run's predictions report.

- Integrated Gradients (evaluation/explain.py) over the window's word embeddings (`inputs_embeds` [W, E]) from the
  [PAD] token's embedding at every position, summed over E: one attribution per token (`heat` [W, 1], channel
  "token"; `heat_rows` the window's tokens, from the run's vocabulary). Tokens are discrete, so the path runs between
  embeddings. The word embeddings rather than captum's LayerIntegratedGradients on the embeddings layer: only the
  tokens move along the path while the position embeddings (where a token sits) and the embedding LayerNorm stay in
  the model, and the one IG wrapper (its completeness gap) serves. [PAD] rather than [MASK]: the [PAD] row is pinned
  at zero (`padding_idx`), a token without content in every run, so the baseline is the all-zero one of the other
  families; [MASK] is trained only by masked-LM pre-training and keeps its random start in a run fine-tuned from
  scratch. The windows are whole (no padding), so the attention mask stays on along the path.
- attention: BERT's last layer averaged over its heads, in the row of the position the explained output reads (the
  classifier's pooler reads position 0, as the windows carry no [CLS] token; the tagger's tag, the last bar), one
  share per token ("k token", k the position);
- permutation importance per token position over the span's labelled windows: the rise in the multi-class Brier
  score when the token at that position is shuffled across windows.

The decision of `--at SYMBOL:DATE` is the symbol's last window ending on that day (one per day for daily bars).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from finfusion.errors import FinfusionError
from finfusion.evaluation.explain import Batch, Group, Output, integrated_gradients
from finfusion.evaluation.explanation import Explanation, instant
from finfusion.families.base import FamilyData
from finfusion.families.class_explain import BRIER, brier_permutation, decision_sample
from finfusion.models.token_bert_classifier import TokenBertClassifier
from finfusion.models.token_bert_tagger import TokenBertTagger
from finfusion.samples.contract import LABEL, ORIGIN_US, SYMBOL_INDEX, TAGS, TOKENS, TOKENS_MASK
from finfusion.samples.token_labels import PIVOT_TAGS
from finfusion.samples.token_sequences import vocabulary_of
from finfusion.samples.windows import collate

#: Batch key of the explained window's word embeddings [B, W, E] (explanations only).
EMBEDS = "token_embeddings"
#: Class names per label set (samples/token_labels.py), in class order.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "direction": ("down", "up"),
    "volatility": ("low", "high"),
    "trend": ("range", "trend"),
    "pivots": PIVOT_TAGS,
}


def encoder_of(model: Any) -> Any:
    """The BERT encoder (transformers BertModel) of a token classifier or tagger."""
    if isinstance(model, TokenBertTagger):
        return model.bert
    if isinstance(model, TokenBertClassifier):
        return model.bert.bert
    raise FinfusionError(
        f"explanations of token_classification runs read a token_bert_classifier or token_bert_tagger, not "
        f"{type(model).__name__}"
    )


def last_tag_marginals(transitions: Tensor, start: Tensor, end: Tensor, emissions: Tensor, mask: Tensor) -> Tensor:
    """[B, K]: the CRF's marginal probability of each tag at the last bar of each window, by the forward algorithm
    over `emissions` [B, W, K] with `transitions` [K, K] (from, to), `start` [K] and `end` [K] scores; `mask` [B, W]
    (the first bar on) ends a window at its last bar on."""
    score = start + emissions[:, 0]  # [B, K]
    for step in range(1, emissions.shape[1]):
        following = torch.logsumexp(score[:, :, None] + transitions + emissions[:, step, None, :], dim=1)
        score = torch.where(mask[:, step, None], following, score)
    return torch.softmax(score + end, dim=-1)


def probabilities(model: Any, embeds: Tensor, mask: Tensor) -> Tensor:
    """[B, K] from the word embeddings `embeds` [B, W, E] of windows `mask` [B, W]: the classifier's class
    probabilities, or the tagger's marginal probabilities of the last bar's tag (its decoding's forbidden transitions
    barred)."""
    if isinstance(model, TokenBertTagger):
        hidden = model.bert(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        crf = model.crf
        transitions = crf.transitions + model.penalty
        return last_tag_marginals(
            transitions, crf.start_transitions, crf.end_transitions, model.emissions(hidden), mask
        )
    return torch.softmax(model.bert(inputs_embeds=embeds, attention_mask=mask.long()).logits, dim=-1)


def _of_tokens(model: Any) -> Output:
    """[B, K] `probabilities` of a batch of token ids."""
    embeddings = encoder_of(model).embeddings.word_embeddings
    return lambda batch: probabilities(model, embeddings(batch[TOKENS]), batch[TOKENS_MASK])


@contextmanager
def _eager(encoder: Any) -> Iterator[None]:
    """The encoder with eager attention (the one that returns its maps) while inside, its own afterwards."""
    own = encoder.config._attn_implementation
    encoder.set_attn_implementation("eager")
    try:
        yield
    finally:
        encoder.set_attn_implementation(own)


def _attention(model: Any, batch: Batch, row: int, tokens: list[str]) -> dict[str, float]:
    """The last layer's attention, averaged over heads, of position `row` on each position ("k token")."""
    encoder = encoder_of(model)
    with _eager(encoder), torch.no_grad():
        maps = encoder(inputs_embeds=batch[EMBEDS], attention_mask=batch[TOKENS_MASK].long(), output_attentions=True)
    shares = maps.attentions[-1][0].mean(dim=0)[row]  # [W]
    return {f"{k} {token}": float(share) for k, (token, share) in enumerate(zip(tokens, shares.tolist(), strict=True))}


def explain_window(
    model: Any, data: FamilyData, cfg: DictConfig, symbol: str, day: date, span: str, steps: int = 64
) -> Explanation:
    """Explain `model`'s call on `symbol`'s window ending on `day` in `span` of the run's data `data` (FamilyData of
    the token-classification family; see the module docstring)."""
    dataset = getattr(data, span)
    universe = data.state["symbols"]
    item = decision_sample(symbol, day, universe, dataset.column(SYMBOL_INDEX), dataset.column(ORIGIN_US))
    label_set = str(data.extra["options"]["label"])
    tagging = label_set == "pivots"
    embeddings = encoder_of(model).embeddings.word_embeddings
    model.eval()
    sample = collate([dataset[item]])
    with torch.no_grad():
        batch = {**sample, EMBEDS: embeddings(sample[TOKENS])}  # [1, W, E]
        if tagging:
            predicted = int(model.decode(sample)[0][-1])
        else:
            predicted = int(probabilities(model, batch[EMBEDS], batch[TOKENS_MASK])[0].argmax())

    def output(b: Batch) -> Tensor:
        return probabilities(model, b[EMBEDS], b[TOKENS_MASK])[:, predicted]

    pad = embeddings.weight[embeddings.padding_idx].detach()
    attributions = integrated_gradients(output, batch, [EMBEDS], steps, {EMBEDS: pad.expand_as(batch[EMBEDS])})
    per_token = attributions.values[EMBEDS][0].sum(dim=-1).numpy()  # [W]
    tokens = vocabulary_of(data.state).decode(sample[TOKENS][0])
    name = CLASS_NAMES[label_set][predicted]
    explained = (
        f"P(last bar tagged {name}), the CRF's marginal probability of the tag decoded for the window's last bar"
        if tagging
        else f"P({name}), the probability of the predicted class ({label_set})"
    )
    labels = dataset.column(TAGS)[:, -1] if tagging else dataset.column(LABEL)
    groups = [Group(f"position {k}", TOKENS, (k,)) for k in range(len(tokens))]
    return Explanation.of(
        attributions,
        per_token[:, None],
        [],
        symbol=symbol,
        decision=instant(int(sample[ORIGIN_US][0])).isoformat(),
        model=str(cfg.model.name),
        explained=explained,
        totals={"tokens": float(per_token.sum())},
        channels=["token"],
        attention=_attention(model, batch, len(tokens) - 1 if tagging else 0, tokens),
        permutation=brier_permutation(_of_tokens(model), dataset, np.asarray(labels), groups),
        permutation_measure=BRIER,
        heat_rows=tokens,
    )
