"""The default text encoder's name, apart from features/text.py so that the CLI's help can show it cheaply."""

from __future__ import annotations

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
