"""Environment variables and defaults shared by the HTTP API and the `finfusion serve` command (no heavy imports)."""

from __future__ import annotations

ENV_STORE = "FINFUSION_STORE"
ENV_MODEL = "FINFUSION_MODEL"
ENV_API_KEY = "FINFUSION_API_KEY"
DEFAULT_STORE = "finfusion-models"
DEFAULT_MODEL = "cga"
