"""Helpers shared by the portfolio tests (tests/test_cga.py, test_portfolio_*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread for the duration: the tensors of these tests are small, and several threads on a busy
    machine are many times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
