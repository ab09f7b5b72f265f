"""The one sample contract: every dataset yields, and every model takes, a dict of named tensors.

Keys (B batch, L lookback, H horizon, C input channels, T target channels, N texts, D text dim, Q quantiles):

- `past`         [B, L, C] float32  input channels up to and including the decision bar (normalised)
- `past_mask`    [B, L]    bool     True where the bar exists (False for padding / missing history)
- `future`       [B, H, T] float32  targets after the decision bar (training and evaluation only)
- `future_mask`  [B, H]    bool
- `label`        [B]       int64    movement class (0 down, 1 up; -1 = inside the dead band, ignored)
- `text_emb`     [B, N, D] float32  embeddings of texts known at the decision bar (most recent last)
- `text_mask`    [B, N]    bool
- `tokens`       [B, L]    int64    price-action token ids (masked-LM samples)
- `symbol_index` [B]       int64    index into the dataset's symbol list
- `origin_us`    [B]       int64    decision instant (the last past bar's close), UTC microseconds
- `scale_loc`, `scale_scale` [B, 1, T] float32  the normaliser's statistics of the target, to denormalise
- `text_ids`     [B, N, S] int64    token ids of the texts of `text_emb` (S tokens each), for models that encode text
- `text_ids_mask` [B, N, S] bool    True on real tokens; a text slot with no True token is empty

The decision bar is the last bar of `past`; `future[:, 0]` is the next bar. Nothing in a sample depends on data
after `origin_us` except `future`, `future_mask` and `label`.
"""

from __future__ import annotations

PAST = "past"
PAST_MASK = "past_mask"
FUTURE = "future"
FUTURE_MASK = "future_mask"
LABEL = "label"
TEXT_EMB = "text_emb"
TEXT_MASK = "text_mask"
TOKENS = "tokens"
SYMBOL_INDEX = "symbol_index"
ORIGIN_US = "origin_us"
SCALE_LOC = "scale_loc"
SCALE_SCALE = "scale_scale"

#: Label value for samples inside the dead band: excluded from classification losses and metrics.
IGNORE_LABEL = -1

TEXT_IDS = "text_ids"
TEXT_IDS_MASK = "text_ids_mask"
