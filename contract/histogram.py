"""Latency buckets: log-linear, in HdrHistogram's manner, the same on every worker and in the analysis.

A latency is counted in the bucket of its value in whole microseconds. Values
below :data:`EXACT_BELOW` µs have a bucket each; above, every power of two is
split into :data:`SUB_BUCKETS` equal buckets, so a bucket is never wider than
1/128 of its lower edge. A value read back as its bucket's midpoint is within
:data:`RELATIVE_ERROR` (0.39 %) of the true one. Buckets are plain integers:
histograms of different workers and intervals merge by adding counts per bucket.

:func:`bucket_of` is the per-event path (integer operations, no allocation);
:func:`lower_edge`, :func:`upper_edge` and :func:`midpoint` read buckets back,
vectorised over numpy arrays.
"""

from __future__ import annotations

import numpy as np

SUB_BITS = 7
SUB_BUCKETS = 1 << SUB_BITS  #: buckets per power of two above the exact range
EXACT_BELOW = SUB_BUCKETS << 1  #: microseconds counted exactly (one bucket per µs): 256
#: Largest relative distance of a value from its bucket's midpoint: half a bucket over its lower edge.
RELATIVE_ERROR = 0.5 / SUB_BUCKETS
#: The bucket of a value too large to time (more than 2**62 µs) or not a number: counted, never read as a value.
OVERFLOW = 63 * SUB_BUCKETS + EXACT_BELOW


def bucket_of(latency_ms: float) -> int:
    """The bucket of a latency in milliseconds (negative values count as 0)."""
    try:
        us = int(latency_ms * 1000.0 + 0.5)
    except (OverflowError, ValueError):  # inf, NaN
        return OVERFLOW
    if us < EXACT_BELOW:
        return us if us > 0 else 0
    shift = us.bit_length() - SUB_BITS - 1
    if shift > 62 - SUB_BITS:
        return OVERFLOW
    return EXACT_BELOW + (shift - 1) * SUB_BUCKETS + (us >> shift) - SUB_BUCKETS


def buckets_of(latency_ms) -> np.ndarray:
    """:func:`bucket_of` over an array (NaN and inf go to :data:`OVERFLOW`)."""
    ms = np.asarray(latency_ms, dtype=float)
    finite = np.isfinite(ms) & (ms < 2.0**52 / 1000)
    us = np.where(finite, np.floor(np.clip(ms, 0, None) * 1000.0 + 0.5), 0).astype(np.int64)
    shift = np.maximum(np.floor(np.log2(np.maximum(us, 1))).astype(np.int64) - SUB_BITS, 1)
    # log2 of a float can land one off at an exact power of two: settle the shift on the integer itself
    shift = np.where((us >> shift) >= EXACT_BELOW, shift + 1, shift)
    shift = np.where((us >> shift) < SUB_BUCKETS, shift - 1, shift)
    log_linear = EXACT_BELOW + (shift - 1) * SUB_BUCKETS + (us >> np.maximum(shift, 0)) - SUB_BUCKETS
    out = np.where(us < EXACT_BELOW, us, log_linear)
    return np.where(finite, out, OVERFLOW)


def _edges_us(bucket) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(bucket, dtype=np.int64)
    exact = b < EXACT_BELOW
    shift = np.where(exact, 0, (b - EXACT_BELOW) // SUB_BUCKETS + 1)
    mantissa = np.where(exact, b, (b - EXACT_BELOW) % SUB_BUCKETS + SUB_BUCKETS)
    low = (mantissa << shift).astype(float)
    high = ((mantissa + 1) << shift).astype(float)
    return np.where(exact, b, low), np.where(exact, b + 1.0, high)


def lower_edge(bucket) -> np.ndarray:
    """The smallest latency (ms) counted in ``bucket`` (inf for :data:`OVERFLOW`)."""
    low, _ = _edges_us(bucket)
    return np.where(np.asarray(bucket) >= OVERFLOW, np.inf, low / 1000.0)


def upper_edge(bucket) -> np.ndarray:
    """The latency (ms) just above every value counted in ``bucket`` (inf for :data:`OVERFLOW`)."""
    _, high = _edges_us(bucket)
    return np.where(np.asarray(bucket) >= OVERFLOW, np.inf, high / 1000.0)


def midpoint(bucket) -> np.ndarray:
    """The latency (ms) a bucket stands for: its midpoint (exact below :data:`EXACT_BELOW` µs)."""
    low, high = _edges_us(bucket)
    b = np.asarray(bucket)
    mid = np.where(b < EXACT_BELOW, low, (low + high - 1) / 2.0)
    return np.where(b >= OVERFLOW, np.inf, mid / 1000.0)
