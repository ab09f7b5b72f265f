#!/usr/bin/env bash
# Regenerate docs/results/multimodal_synthetic*.md: walk-forward evaluation of the tiny multimodal forecaster against
# its price-only twin, its placebo twin (texts permuted across dates), the random walk and the direction baselines on
# the synthetic market (the quickstart's evaluation plus the placebo: configs/evaluation/text_placebo.yaml), and two
# ablations: the market's default news effects (half the quickstart's), and the decoder without its conditional mean
# path. Usage: bash scripts/results_multimodal.sh   (about 30 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DEFAULT_NEWS=(data.synthetic.effect_small=0.015 data.synthetic.effect_large=0.04)
.venv/bin/finfusion evaluate --config multimodal_tiny evaluation=text_placebo --lake runs/multimodal-lake --run runs/multimodal-eval \
  --markdown docs/results/multimodal_synthetic.md
.venv/bin/finfusion evaluate --config multimodal_tiny evaluation=text_placebo --lake runs/multimodal-lake-default-news \
  --run runs/multimodal-eval-default-news --markdown docs/results/multimodal_synthetic_default_news.md \
  "${DEFAULT_NEWS[@]}"
.venv/bin/finfusion evaluate --config multimodal_tiny evaluation=text_placebo --lake runs/multimodal-lake --run runs/multimodal-eval-no-mean \
  --markdown docs/results/multimodal_synthetic_no_mean_path.md +model.diffusion.residual_of_mean=false
