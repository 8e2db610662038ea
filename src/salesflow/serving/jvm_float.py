"""The JVM's floating-point sums, reproduced in numpy so in-process predictions equal Spark's bit for bit.

Spark's GBT prediction is a dot product of tree weights and tree outputs computed by
dev.ludovic.netlib's VectorBLAS: one fused multiply-add accumulator per SIMD lane. Reproducing its
order and its single roundings needs error-free products (Dekker), error-free sums (Knuth) and an
emulated FMA (Boldo and Melquiond).
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["fma", "jvm_double_lanes", "product_error", "vector_ddot"]

Float = NDArray[np.float64]

#: Veltkamp's constant 2**27 + 1 splits a double's 53-bit significand into two 26-bit halves.
_SPLITTER = 134217729.0


def _split(v: Float) -> tuple[Float, Float]:
    """Veltkamp's split of each double into two halves whose products are exact."""
    t = _SPLITTER * v
    high = t - (t - v)
    return high, v - high


def product_error(a: Float, b: Float, product: Float) -> Float:
    """Dekker's exact error of `product = a * b`: a * b == product + error, no rounding."""
    (ah, al), (bh, bl) = _split(a), _split(b)
    return ((ah * bh - product) + ah * bl + al * bh) + al * bl


def _two_sum(p: Float, q: Float) -> tuple[Float, Float]:
    """Knuth's error-free sum: p + q == s + error exactly."""
    s = p + q
    qq = s - p
    return s, (p - (s - qq)) + (q - qq)


def fma(product: Float, error: Float, addend: Float) -> Float:
    """Java's Math.fma(a, b, addend) given a*b as product + error: one rounding of the exact sum.

    Boldo and Melquiond's emulation: error-free sums, then the low part rounded to odd so that
    the final rounding to nearest cannot round twice.
    """
    high, low = _two_sum(addend, product)
    mid, mid_error = _two_sum(low, error)
    # Round to odd: an inexact `mid` with an even last bit moves one step towards the error.
    even = (mid.view(np.int64) & 1) == 0
    step = np.nextafter(mid, np.copysign(np.inf, mid_error))
    return high + np.where((mid_error != 0) & even, step, mid)


def vector_ddot(product: Float, error: Float, lanes: int) -> Float:
    """sum(weight[t] * value[t]) over axis 0 in the order of dev.ludovic.netlib's VectorBLAS.ddot.

    `product` is each weight * value rounded, `error` its exact rounding error. Spark's GBT predict
    is `nativeBLAS.ddot`, which without a native BLAS is VectorBLAS: one FMA accumulator per SIMD
    lane over whole vectors, the lanes summed in order, then a multiply-add tail. A plain
    sequential sum differs from Spark in the last bits of most predictions.
    """
    n_trees = product.shape[0]
    whole = n_trees - n_trees % lanes
    total = np.zeros((1, *product.shape[1:]), dtype=np.float64)
    if whole:
        acc = product[:lanes]  # fma(a, b, 0) is the rounded product
        for start in range(lanes, whole, lanes):
            chunk = slice(start, start + lanes)
            acc = fma(product[chunk], error[chunk], acc)
        total = np.add.accumulate(acc, axis=0)[-1:]  # accumulate adds strictly in lane order
    last: NDArray[np.float64] = np.add.accumulate(np.concatenate([total, product[whole:]]), axis=0)[
        -1
    ]
    return last


def jvm_double_lanes() -> int:
    """Doubles per SIMD vector of the JVM's Vector API on this CPU (the width VectorBLAS uses).

    HotSpot uses 512-bit vectors with AVX-512, 256-bit with AVX/AVX2 and 128-bit otherwise (SSE,
    ARM NEON). On other hardware, pass `dot_lanes` to `Forecaster.load` explicitly.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 2
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 4  # no cpuinfo (macOS): every x86-64 Mac since 2013 has AVX2
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return 8 if "avx512f" in flags else 4 if "avx" in flags else 2
