"""Transaction costs: half-spread + commission + square-root market impact + slippage, per trade, vectorised.

For a trade of traded value V = |shares| * price (currency) in asset i at bar t, the cost in currency is

    cost = V * (half_spread_bps + commission_bps + slippage_bps) * 1e-4       proportional part
         + commission_per_share * V / price[t, i]                              per-share commission (needs prices)
         + impact_coef * sigma[t, i] * sqrt(V / adv[t, i]) * V                 square-root market impact (needs adv)

`sigma` is the asset's daily return volatility, trailing and point-in-time (`trailing_vol` over `vol_window` bars up to
and including t; `default_daily_vol` while fewer than two returns are known) and `adv` its average traded value per bar
(currency) known at t, e.g. `trailing_adv`. Impact is charged only where adv is finite and positive; the per-share
commission only where the price is finite and positive. Costs are paid from cash at the trade.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finfusion.evaluation.sizing import rolling_moments, trailing_vol

BPS = 1e-4


@dataclass(frozen=True)
class CostModel:
    """Cost settings (defaults on: 2 bps half-spread, 1 bp commission, 1 bp slippage, impact coefficient 0.1)."""

    half_spread_bps: float = 2.0
    commission_bps: float = 1.0
    commission_per_share: float = 0.0
    slippage_bps: float = 1.0
    impact_coef: float = 0.1
    vol_window: int = 20
    default_daily_vol: float = 0.02

    def __post_init__(self) -> None:
        for name in ("half_spread_bps", "commission_bps", "commission_per_share", "slippage_bps", "impact_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def proportional_rate(self) -> float:
        """Cost per unit of traded value of the proportional part (half-spread + commission + slippage)."""
        return (self.half_spread_bps + self.commission_bps + self.slippage_bps) * BPS

    def linear_rate(self, shape: tuple[int, ...], prices: np.ndarray | None = None) -> np.ndarray:
        """Cost per unit of traded value that is linear in V, of `shape` (e.g. [T, A]): the proportional rate plus
        commission_per_share / price (prices of the same shape)."""
        if self.commission_per_share == 0:
            return np.broadcast_to(self.proportional_rate, shape)
        if prices is None:
            raise ValueError("a per-share commission needs prices")
        p = np.broadcast_to(np.asarray(prices, dtype=np.float64), shape)
        usable = np.isfinite(p) & (p > 0)
        return self.proportional_rate + np.divide(self.commission_per_share, p, out=np.zeros(shape), where=usable)

    def impact_factor(self, returns: np.ndarray, adv: np.ndarray) -> np.ndarray:
        """[T, A] k such that the impact cost of traded value V is k * V**1.5: impact_coef * sigma / sqrt(adv), with
        sigma the trailing daily volatility of `returns` [T, A] and adv [T, A]; 0 where adv is missing or <= 0."""
        r = np.asarray(returns, dtype=np.float64)
        volume = np.asarray(adv, dtype=np.float64)
        if volume.shape != r.shape:
            raise ValueError(f"adv {volume.shape} must have the shape of returns {r.shape}")
        sigma = trailing_vol(r, self.vol_window)
        sigma = np.where(np.isfinite(sigma), sigma, self.default_daily_vol)
        usable = np.isfinite(volume) & (volume > 0)
        root_adv = np.sqrt(np.where(usable, volume, 1.0))
        return np.divide(self.impact_coef * sigma, root_adv, out=np.zeros(r.shape), where=usable)

    def trade_costs(
        self,
        traded_value: np.ndarray,
        *,
        prices: np.ndarray | None = None,
        daily_vol: np.ndarray | float | None = None,
        adv: np.ndarray | None = None,
    ) -> np.ndarray:
        """Cost in currency of each trade (any shape, e.g. [T, A]; the arguments share it). The sign of
        `traded_value` (buy or sell) is ignored; without `daily_vol`, `default_daily_vol` is used; without `adv`, no
        impact is charged."""
        value = np.abs(np.asarray(traded_value, dtype=np.float64))
        cost = value * self.linear_rate(value.shape, prices)
        if adv is not None and self.impact_coef > 0:
            volume = np.broadcast_to(np.asarray(adv, dtype=np.float64), value.shape)
            sigma = self.default_daily_vol if daily_vol is None else np.asarray(daily_vol, dtype=np.float64)
            usable = np.isfinite(volume) & (volume > 0)
            participation = np.divide(value, volume, out=np.zeros_like(value), where=usable)
            cost = cost + self.impact_coef * sigma * np.sqrt(participation) * value
        return cost


NO_COSTS = CostModel(half_spread_bps=0.0, commission_bps=0.0, slippage_bps=0.0, impact_coef=0.0)


def trailing_adv(prices: np.ndarray, volumes: np.ndarray, window: int = 20) -> np.ndarray:
    """Average daily traded value [T, A] (currency): mean of price * volume over the finite bars in rows
    t - window + 1 .. t (point-in-time at the close of t); NaN where no bar in the window has both."""
    _, mean, _ = rolling_moments(np.asarray(prices, dtype=np.float64) * np.asarray(volumes, dtype=np.float64), window)
    return mean
