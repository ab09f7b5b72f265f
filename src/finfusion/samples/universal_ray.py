"""The iterative builder's per-batch steps on Ray Data (the optional `ray` extra), for lakes past one machine.

The two passes of samples/universal.py run as Ray Data map tasks over the asset batches: pass 1's per-batch return
sums are combined on the driver into the market return (one row per instant), which every pass-2 task receives
through the object store; each pass-2 task writes its own shard to the output folder (a shared file system on a
cluster) and returns its window count. Nothing here is a scheduler of ours: Ray places and retries the tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finfusion.errors import FinfusionError
from finfusion.samples.universal import BuilderConfig, batch_returns, market_returns, write_batch


def ray_counts(config: BuilderConfig, groups: list[list[str]], out: Path, position: dict[str, int]) -> list[int]:
    """Window counts of the shards written by Ray tasks, in batch order."""
    try:
        import ray
    except ImportError as exc:
        raise FinfusionError("universal data: engine 'ray' needs the ray extra (pip install 'finfusion[ray]')") from exc
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    items = [{"number": k, "symbols": batch} for k, batch in enumerate(groups)]

    def sums(row: dict[str, Any]) -> dict[str, Any]:
        frame = batch_returns(config, list(row["symbols"]))
        return {"number": row["number"], "sums": frame.write_ipc(None).getvalue()}  # Arrow IPC: exact dtypes

    import polars as pl

    rows = sorted(ray.data.from_items(items).map(sums).take_all(), key=lambda row: row["number"])
    market = ray.put(market_returns(pl.read_ipc(row["sums"]) for row in rows))

    def shard(row: dict[str, Any]) -> dict[str, Any]:
        count = write_batch(config, ray.get(market), list(row["symbols"]), row["number"], out, position)
        return {"number": row["number"], "count": count}

    written = sorted(ray.data.from_items(items).map(shard).take_all(), key=lambda row: row["number"])
    return [int(row["count"]) for row in written]
