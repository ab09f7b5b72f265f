"""The one sample contract: every dataset yields, and every model takes, a dict of named tensors. Every key is named
here; its shape depends on the family whose samples carry it (shapes below without the batch axis B).

Forecast windows (samples/windows.py, samples/text_windows.py; L lookback, H horizon, C input channels, T target
channels, N texts, D text dim, S tokens per text):

- `past`          [L, C] float32  input channels up to and including the decision bar (normalised)
- `past_mask`     [L]    bool     True where the bar exists (False for padding / missing history)
- `future`        [H, T] float32  targets after the decision bar (training and evaluation only)
- `future_mask`   [H]    bool
- `scale_loc`, `scale_scale` [1, T] float32  the normaliser's statistics of the targets, to denormalise
- `text_emb`      [N, D] float32  embeddings of the texts known at the decision bar (most recent last)
- `text_mask`     [N]    bool
- `text_ids`      [N, S] int64    token ids of the texts of `text_emb`, for models that encode text themselves
- `text_ids_mask` [N, S] bool     True on real tokens; a text slot with no True token is empty

Movement samples (samples/daily_movement.py; L lag days, N tweets per day, C price channels):

- `past` [L, C], `past_mask` [L] (steps left-padded, the target step last)
- `text_emb`      [L, N, D] float32  each lag day's tweets (oldest first); `text_mask` [L, N] bool
- `text_age`      [L, N] float32     days from a tweet's publication to the decision instant (0 on padding)
- `label`         []     int64       movement class (0 down, 1 up; -1 = inside the dead band, ignored)

Portfolio windows (samples/portfolio.py; A assets, L lookback, F features, H horizon):

- `past` [A, L, F], `past_mask` [A, L]; `future` [A, H] simple returns, `future_mask` [A, H]
- `news_emb`      [A, L, D] float32  mean text embedding of each (asset, bar) bin, 0 where it has no text
- `news_mask`     [A, L]    bool     the bin has a text
- `news_coverage` [A, L, A] float32  one-hot of the universe symbols the bin's texts mention

Token sequences (samples/masked_lm.py; L tokens):

- `tokens` [L] int64 price-action token ids; `tokens_mask` [L] bool real tokens; `labels` [L] int64 masked-LM
  targets (-100 where not predicted)

Relevance samples (samples/relevance.py; Fc context features, Fs stock features, K horizons):

- `context` [Fc] float32, `stock` [Fs] float32  normalised feature vectors at the decision instant
- `relevance` [K] float32 in [-1, 1], `direction` [K] int64 (1 up, 0 down), `label_mask` [K] bool (label known),
  `forward_return` [K] float32 (the log return behind the label; NaN when unknown), `past_return` [K] float32 (the
  log return over the h days up to the decision instant)

Token windows (samples/token_labels.py; W tokens): `tokens` [W], `tokens_mask` [W], and `label` [] (a label of the
window) or `tags` [W] int64 (a tag per bar; -1 unknown); with the price window and the texts of the decision bar
(samples/token_fusion.py; L bars, C price channels, N texts) `past` [L, C], `past_mask` [L], `text_emb` [N, D],
`text_mask` [N]

Order-book windows (samples/orderbook.py; T snapshots, L levels):

- `book` [T, L, 4] float32  (ask price, ask size, bid price, bid size) per level, normalised; `label` [] int64
  (0 down, 1 stationary, 2 up; -1 unknown)

Every family: `symbol_index` [] int64 (index into the dataset's symbol list; portfolio samples have none),
`origin_us` [] int64 (the decision instant: the last past bar's close, UTC microseconds).

The decision bar is the last bar of `past`; `future[0]` is the next bar. Nothing in a sample depends on data after
`origin_us` except `future`, `future_mask`, `label`, `labels`, `relevance`, `direction`, `label_mask` and
`forward_return`.
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
TEXT_AGE = "text_age"
NEWS_EMB = "news_emb"
NEWS_MASK = "news_mask"
NEWS_COVERAGE = "news_coverage"
TOKENS_MASK = "tokens_mask"
LABELS = "labels"
CONTEXT = "context"
STOCK = "stock"
RELEVANCE = "relevance"
DIRECTION = "direction"
LABEL_MASK = "label_mask"
FORWARD_RETURN = "forward_return"
PAST_RETURN = "past_return"
BOOK = "book"
TAGS = "tags"
