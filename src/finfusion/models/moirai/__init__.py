"""Moirai (Woo et al., ICML 2024), the universal forecaster of seed 003, as pure modules.

- `projections.py`  input and output projections with one weight per patch size
- `scaler.py`       instance normalisation per (sample, variate) over the observed context
- `attention.py`    any-variate attention: rotary positions on time, learned same/other-variate biases
- `encoder.py`      the pre-norm Transformer encoder (RMSNorm, gated SiLU feed-forward)
- `distribution.py` the mixture head (Student-t, low-variance normal, negative binomial, log-normal) and its NLL
- `module.py`       `MoiraiModule`: tokens in, the predictive mixture out (the published checkpoints' layout)
- `tokens.py`       windows -> token sequences (variates flattened, patches), packing of several samples per row
- `presets.py`      tiny / small / base / large and the token budget
- `published.py`    loading the published Moirai 1.x weights from a local folder
- `forecaster.py`   the registered model of the forecast family

The state-dict names follow uni2ts's `MoiraiModule`, so the published `model.safetensors` loads as it is; the code is
our own (uni2ts cannot be installed beside torch 2.13 and numpy 2), checked against uni2ts by the parity fixtures in
tests/fixtures/moirai (written by scripts/moirai_parity_fixtures.sh in a separate environment).
"""
