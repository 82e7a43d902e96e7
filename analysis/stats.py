"""The statistics behind the verdicts: robust trends and exact percentiles with bounds.

Pure functions from arrays or Series to figures; no I/O, no plotting.

Why not a significance test for leaks: the RSS of a healthy garbage-collected
server wanders (collections, allocator arenas, caches warming), so "the slope
is significantly above zero" is true of almost every long healthy run. A leak is
judged instead by *size and persistence*: a robust slope whose whole confidence
interval lies above a practical threshold, growth that is still going on at the
end of the run, and a late plateau clearly above the early one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binom, theilslopes

#: Theil-Sen is O(n^2) in memory and time: series are bucketed down to this many points.
MAX_TREND_POINTS = 1_500


@dataclass(frozen=True)
class Trend:
    """A Theil-Sen slope (units per second) with its confidence interval."""

    slope: float
    low: float
    high: float
    n: int

    def per_hour(self) -> Trend:
        return Trend(self.slope * 3600, self.low * 3600, self.high * 3600, self.n)


def downsample(t: np.ndarray, y: np.ndarray, max_points: int = MAX_TREND_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Bucket a series into at most ``max_points`` equal-count buckets of (mean t, median y).

    Medians keep the robustness Theil-Sen is chosen for: one spike in a
    bucket does not move it.
    """
    n = len(t)
    if n <= max_points:
        return t, y
    edges = np.linspace(0, n, max_points + 1).astype(int)
    buckets = np.repeat(np.arange(max_points), np.diff(edges))
    frame = pd.DataFrame({"b": buckets, "t": t, "y": y}).groupby("b")
    return frame["t"].mean().to_numpy(), frame["y"].median().to_numpy()


def trend(t, y, confidence: float = 0.95) -> Trend | None:
    """Theil-Sen slope of y over t (per unit of t); None with fewer than 3 distinct times."""
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = downsample(t[keep], y[keep])
    if len(np.unique(t)) < 3:
        return None
    res = theilslopes(y, t, alpha=confidence)
    return Trend(float(res.slope), float(res.low_slope), float(res.high_slope), int(len(t)))


def thirds_medians(y) -> tuple[float, float, float]:
    """Medians of the first, middle and last third of a series (its three plateaus)."""
    y = np.asarray(y, dtype=float)
    y = y[np.isfinite(y)]
    if len(y) < 3:
        return (float("nan"),) * 3
    return tuple(float(np.median(part)) for part in np.array_split(y, 3))


@dataclass(frozen=True)
class GrowthJudgement:
    """Is a series still growing, by more than its noise, beyond a practical size?"""

    growing: bool  #: still growing at the end (the leak case): growth seen and the last third a real trend
    overall: Trend | None  #: Theil-Sen slope per hour over the whole window
    growth: float  #: last-third plateau minus first-third plateau
    late_growth: float  #: last-third plateau minus middle-third plateau
    reason: str
    seen: bool = False  #: growth beyond both thresholds over the window, whether or not it went on to the end
    late: Trend | None = None  #: Theil-Sen slope per hour over the last third alone


def judge_growth(
    t, y, *, max_slope_per_hour: float, min_growth: float, min_late_growth: float = 0.0
) -> GrowthJudgement:
    """Growth is *seen* when both hold:

    1. the Theil-Sen slope's *lower* 95 % bound over the window exceeds
       ``max_slope_per_hour`` (not merely "significantly above zero");
    2. the last third's plateau is at least ``min_growth`` above the first's
       (large enough to matter, not allocator noise).

    It is *still growing at the end* (``growing``: the leak case) when also:

    3. the last third on its own is a real trend: its own Theil-Sen lower 95 %
       bound exceeds ``max_slope_per_hour`` (the median of pairwise slopes: one
       step of a heap growing toward its ceiling does not make one, a steady
       leak does);
    4. the last third's plateau is above the middle third's by more than
       ``min_late_growth`` and by more than the threshold slope gives over a third:
       an absolute size, not a few KiB over a short window (a cache that filled
       and stopped, a heap that grew in steps and stopped, is not a leak).

    Plateaus are medians over thirds of the window (equal numbers of samples):
    each spans many collection cycles, so a GC sawtooth cancels out where a
    short-window slope would not.
    """
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    overall = trend(t, y)
    if overall is None:
        return GrowthJudgement(False, None, float("nan"), float("nan"), "too few samples for a trend")
    overall = overall.per_hour()
    first, middle, last = thirds_medians(y)
    growth, late_growth = last - first, last - middle
    if overall.low <= max_slope_per_hour:
        return GrowthJudgement(False, overall, growth, late_growth, "slope's lower bound within threshold")
    if not growth >= min_growth:
        return GrowthJudgement(False, overall, growth, late_growth, "last plateau not above the first by the minimum")
    keep = np.isfinite(t) & np.isfinite(y)
    late_t, late_y = (np.array_split(a[keep], 3)[2] for a in (t, y))
    late = trend(late_t, late_y)
    late = late.per_hour() if late is not None else None
    third_hours = (t[-1] - t[0]) / 3 / 3600
    if late is None or late.low <= max_slope_per_hour:
        why = "growth stopped before the end (bounded): no trend in the last third"
    elif not late_growth > max(min_late_growth, max_slope_per_hour * third_hours):
        why = "growth stopped before the end (bounded): the last third barely rose"
    else:
        return GrowthJudgement(
            True, overall, growth, late_growth, "still growing at the end, beyond threshold", True, late
        )
    return GrowthJudgement(False, overall, growth, late_growth, why, True, late)


@dataclass(frozen=True)
class Quantile:
    """A sample quantile (an observed value, or the bucket holding it) with one-sided distribution-free bounds."""

    p: float
    value: float
    upper: float | None  #: None when n is too small for the bound
    n: int
    lower: float | None = None  #: None when n is too small for the bound
    #: Relative error of ``value`` and the bounds: 0 for exact values, the histogram's for bucketed ones
    #: (contract/histogram.py). Judging with it: ``upper * (1 + error)``, ``lower * (1 - error)``.
    error: float = 0.0

    @property
    def upper_judged(self) -> float | None:
        """The upper bound widened by the error: what a limit is compared with for a pass."""
        return None if self.upper is None else self.upper * (1 + self.error)

    @property
    def lower_judged(self) -> float | None:
        """The lower bound narrowed by the error: what a limit is compared with for a failure."""
        return None if self.lower is None else self.lower * (1 - self.error)


def min_samples_for_upper_bound(p: float, confidence: float = 0.95) -> int:
    """Fewest samples for which the largest one bounds the p-quantile: 1 - p^n >= confidence."""
    return math.ceil(math.log(1 - confidence) / math.log(p))


def quantile(values, p: float, confidence: float = 0.95, weights=None, error: float = 0.0) -> Quantile:
    """The p-quantile of the sample (no interpolation: an observed value) and its bounds.

    The upper bound is the order statistic x_(k), k the smallest rank with
    P(Binomial(n, p) <= k - 1) >= confidence: whatever the distribution, the
    true p-quantile lies below x_(k) with at least that confidence. The lower
    bound is x_(j), j the largest rank with P(Binomial(n, p) >= j) >= confidence.
    Infinite values count (an attempt that never finished is slower than any
    that did); NaN values are dropped.

    ``weights``: how many observations each value stands for (a histogram's
    bucket counts, with its buckets' midpoints as values; 0 for a value counted
    elsewhere): ranks are taken over the counts, so the figures are those of
    the whole sample, each within ``error`` (relative) of the exact one.
    """
    x = np.asarray(values, dtype=float)
    w = np.ones(len(x), dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    keep = ~np.isnan(x) & (w > 0)
    x, w = x[keep], w[keep]
    order = np.argsort(x, kind="stable")
    x, cum = x[order], np.cumsum(w[order])
    n = int(cum[-1]) if len(cum) else 0
    if n == 0:
        return Quantile(p, float("nan"), None, 0, error=error)

    def at_rank(rank: int) -> float:  # the value of the rank-th smallest observation (1-based)
        return float(x[np.searchsorted(cum, rank)])

    value = at_rank(min(n, max(1, math.ceil(p * n))))
    k = int(binom.ppf(confidence, n, p)) + 1
    upper = at_rank(k) if k <= n else None
    j = int(binom.ppf(1 - confidence, n, p))
    while j >= 1 and binom.sf(j - 1, n, p) < confidence:  # ppf lands on the boundary: step inside it
        j -= 1
    lower = at_rank(j) if j >= 1 else None
    return Quantile(p, value, upper, n, lower, error)
