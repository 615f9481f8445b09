"""Naive reference implementations (oracles) for the op tests, plus the PyTorch reference loader
and a stand-in for a live writer process.

Each oracle is its op's definition written out as nested Python loops in float64, readable line
by line and validated against PyTorch in ``test_oracles.py``. They are slow: use tiny sizes.
Op tests compare the engine's forward and backward results with these, never with the im2col
code under test.

Notation: N batch, C channels, H/W height/width, OC output channels, KH/KW kernel, SH/SW stride,
PH/PW padding, OH/OW output size, ``OH = (H + 2*PH - KH) // SH + 1`` (floor division).
``kernel``, ``stride`` and ``padding`` accept an int or a pair ``(for H, for W)``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

Pair = int | tuple[int, int]  # an argument: one int for both axes, or (for H, for W)
P2 = tuple[int, int]

#: PyTorch-computed reference vectors, kept in the repository (``tests/data/README.md`` says
#: where they come from); ``TINYGRAD_CNN_REFERENCE_DIR`` overrides the location.
REFERENCE_DIR = Path(
    os.environ.get("TINYGRAD_CNN_REFERENCE_DIR")
    or Path(__file__).resolve().parent / "data" / "reference"
)


def load_reference(name: str) -> list[dict]:
    """Load the PyTorch reference cases ``REFERENCE_DIR/{name}.json`` + ``{name}.npz``.

    Returns one dict per case: the json parameters (lists become tuples, e.g. ``stride=(2, 1)``)
    and the case's arrays by field name (``x``, ``gy``, ``y``, ...; scalars are 0-d arrays).
    Raises ``FileNotFoundError`` when the files are absent.
    """
    params = json.loads((REFERENCE_DIR / f"{name}.json").read_text())
    with np.load(REFERENCE_DIR / f"{name}.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    cases = []
    for p in params:
        case = {k: tuple(v) if isinstance(v, list) else v for k, v in p.items()}
        prefix = f"{p['case']}_"
        case.update({k[len(prefix) :]: a for k, a in arrays.items() if k.startswith(prefix)})
        cases.append(case)
    return cases


def _pair(v: Pair) -> P2:
    a, b = (v, v) if isinstance(v, (int, np.integer)) else v
    return int(a), int(b)


def _geometry(
    x_shape: tuple[int, ...], kernel: Pair, stride: Pair | None, padding: Pair
) -> tuple[P2, P2, P2, P2]:
    """Validate a 2-D window geometry; return ``(KH, KW), (SH, SW), (PH, PW), (OH, OW)``."""
    if len(x_shape) != 4:
        raise ValueError(f"expected x of shape (N, C, H, W), got {x_shape}")
    k = _pair(kernel)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        raise ValueError(f"bad kernel {k}, stride {s} or padding {p}")
    out = tuple(
        (size + 2 * pad - kk) // ss + 1
        for size, kk, ss, pad in zip(x_shape[2:], k, s, p, strict=True)
    )
    if min(out) < 1:
        raise ValueError(f"kernel {k} larger than padded input {x_shape} with padding {p}")
    return k, s, p, out


def _taps(oh: int, ow: int, k: P2, s: P2, p: P2, hw: P2) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(kh, kw, i, j)`` for the in-bounds input pixels of window ``(oh, ow)``, row-major.

    Padding positions are skipped: they contribute 0 to sums and never win a max.
    """
    for kh, kw in itertools.product(range(k[0]), range(k[1])):
        i, j = oh * s[0] - p[0] + kh, ow * s[1] - p[1] + kw
        if 0 <= i < hw[0] and 0 <= j < hw[1]:
            yield kh, kw, i, j


def _check_conv(x: np.ndarray, w: np.ndarray) -> None:
    if w.ndim != 4 or x.ndim != 4 or w.shape[1] != x.shape[1]:
        raise ValueError(f"conv2d: x (N, C, H, W) {x.shape} vs w (OC, C, KH, KW) {w.shape}")


def conv2d_naive(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: Pair = 1, padding: Pair = 0
) -> np.ndarray:
    """Cross-correlation ``y[n, oc, oh, ow] = b[oc] + sum_{c,kh,kw} x_pad[...] * w[oc, c, kh, kw]``.

    x (N, C, H, W), w (OC, C, KH, KW), b (OC,) or None -> y (N, OC, OH, OW); zero padding.
    """
    _check_conv(x, w)
    N, C, H, W = x.shape
    OC = w.shape[0]
    k, s, p, (OH, OW) = _geometry(x.shape, w.shape[2:], stride, padding)
    y = np.zeros((N, OC, OH, OW))
    for n, oc, oh, ow in itertools.product(range(N), range(OC), range(OH), range(OW)):
        acc = 0.0 if b is None else float(b[oc])
        for c in range(C):
            for kh, kw, i, j in _taps(oh, ow, k, s, p, (H, W)):
                acc += float(x[n, c, i, j]) * float(w[oc, c, kh, kw])
        y[n, oc, oh, ow] = acc
    return y


def conv2d_naive_grads(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    gy: np.ndarray,
    stride: Pair = 1,
    padding: Pair = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of ``sum(conv2d_naive(x, w, b, stride, padding) * gy)``, scattered per output.

    gy (N, OC, OH, OW) -> gx (N, C, H, W), gw (OC, C, KH, KW), gb (OC,) (None when b is None).
    """
    _check_conv(x, w)
    N, C, H, W = x.shape
    OC = w.shape[0]
    k, s, p, out = _geometry(x.shape, w.shape[2:], stride, padding)
    if gy.shape != (N, OC, *out):
        raise ValueError(f"conv2d: gy {gy.shape} != output shape {(N, OC, *out)}")
    gx, gw, gb = np.zeros(x.shape), np.zeros(w.shape), np.zeros(OC)
    for n, oc, oh, ow in itertools.product(range(N), range(OC), range(out[0]), range(out[1])):
        g = float(gy[n, oc, oh, ow])
        gb[oc] += g
        for c in range(C):
            for kh, kw, i, j in _taps(oh, ow, k, s, p, (H, W)):
                gx[n, c, i, j] += g * float(w[oc, c, kh, kw])
                gw[oc, c, kh, kw] += g * float(x[n, c, i, j])
    return gx, gw, (None if b is None else gb)


def _pool_geometry(x: np.ndarray, kernel: Pair, stride: Pair | None, padding: Pair) -> tuple:
    k, s, p, out = _geometry(x.shape, kernel, stride, padding)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"pool2d: padding {p} must be <= kernel // 2 per side, kernel {k}")
    return k, s, p, out


def _pool_windows(x: np.ndarray, out: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    N, C = x.shape[:2]
    return itertools.product(range(N), range(C), range(out[0]), range(out[1]))


def _argmax_window(x, n, c, oh, ow, k, s, p) -> tuple[int, int]:
    """Input position of the FIRST maximal element (row-major) of window ``(oh, ow)``."""
    best, where = -math.inf, None
    for _, _, i, j in _taps(oh, ow, k, s, p, x.shape[2:]):
        if where is None or x[n, c, i, j] > best:  # strict: ties keep the earlier element
            best, where = float(x[n, c, i, j]), (i, j)
    return where


def max_pool2d_naive(
    x: np.ndarray, kernel: Pair, stride: Pair | None = None, padding: Pair = 0
) -> np.ndarray:
    """Max over each window; padding acts as -inf. x (N, C, H, W) -> y (N, C, OH, OW).

    ``stride=None`` means ``stride = kernel``; padding must be <= kernel // 2 (PyTorch's rule).
    """
    k, s, p, out = _pool_geometry(x, kernel, stride, padding)
    y = np.zeros((*x.shape[:2], *out))
    for n, c, oh, ow in _pool_windows(x, out):
        y[n, c, oh, ow] = x[(n, c, *_argmax_window(x, n, c, oh, ow, k, s, p))]
    return y


def max_pool2d_naive_grad(
    x: np.ndarray, gy: np.ndarray, kernel: Pair, stride: Pair | None = None, padding: Pair = 0
) -> np.ndarray:
    """Gradient of max-pool: each window's gy goes to its first maximal element (row-major).

    gy (N, C, OH, OW) -> gx (N, C, H, W); overlapping windows accumulate.
    """
    k, s, p, out = _pool_geometry(x, kernel, stride, padding)
    gx = np.zeros(x.shape)
    for n, c, oh, ow in _pool_windows(x, out):
        gx[(n, c, *_argmax_window(x, n, c, oh, ow, k, s, p))] += gy[n, c, oh, ow]
    return gx


def avg_pool2d_naive(
    x: np.ndarray, kernel: Pair, stride: Pair | None = None, padding: Pair = 0
) -> np.ndarray:
    """Mean over each window, zero padding counted: divisor is always KH*KW.

    x (N, C, H, W) -> y (N, C, OH, OW); PyTorch's ``count_include_pad=True``.
    """
    k, s, p, out = _pool_geometry(x, kernel, stride, padding)
    y = np.zeros((*x.shape[:2], *out))
    for n, c, oh, ow in _pool_windows(x, out):
        taps = _taps(oh, ow, k, s, p, x.shape[2:])
        y[n, c, oh, ow] = math.fsum(float(x[n, c, i, j]) for _, _, i, j in taps) / (k[0] * k[1])
    return y


def avg_pool2d_naive_grad(
    x: np.ndarray, gy: np.ndarray, kernel: Pair, stride: Pair | None = None, padding: Pair = 0
) -> np.ndarray:
    """Gradient of avg-pool: gy / (KH*KW) to every in-bounds pixel of the window.

    gy (N, C, OH, OW) -> gx (N, C, H, W); overlapping windows accumulate.
    """
    k, s, p, out = _pool_geometry(x, kernel, stride, padding)
    gx = np.zeros(x.shape)
    for n, c, oh, ow in _pool_windows(x, out):
        for _, _, i, j in _taps(oh, ow, k, s, p, x.shape[2:]):
            gx[n, c, i, j] += gy[n, c, oh, ow] / (k[0] * k[1])
    return gx


def im2col_naive(x: np.ndarray, kernel: Pair, stride: Pair = 1, padding: Pair = 0) -> np.ndarray:
    """Unfold windows into rows: x (N, C, H, W) -> (N*OH*OW, C*KH*KW), zero padding.

    Rows are ordered (n, oh, ow) and columns (c, kh, kw), both row-major.
    """
    N, C, H, W = x.shape
    k, s, p, (OH, OW) = _geometry(x.shape, kernel, stride, padding)
    col = np.zeros((N * OH * OW, C * k[0] * k[1]))
    for n, oh, ow, c in itertools.product(range(N), range(OH), range(OW), range(C)):
        for kh, kw, i, j in _taps(oh, ow, k, s, p, (H, W)):
            col[(n * OH + oh) * OW + ow, (c * k[0] + kh) * k[1] + kw] = x[n, c, i, j]
    return col


def col2im_naive(
    col: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: Pair,
    stride: Pair = 1,
    padding: Pair = 0,
) -> np.ndarray:
    """Adjoint of :func:`im2col_naive`: scatter-add rows back. (N*OH*OW, C*KH*KW) -> x_shape."""
    N, C, H, W = x_shape
    k, s, p, (OH, OW) = _geometry(tuple(x_shape), kernel, stride, padding)
    if col.shape != (N * OH * OW, C * k[0] * k[1]):
        raise ValueError(f"col2im: col {col.shape} does not match x_shape {x_shape}")
    x = np.zeros(x_shape)
    for n, oh, ow, c in itertools.product(range(N), range(OH), range(OW), range(C)):
        for kh, kw, i, j in _taps(oh, ow, k, s, p, (H, W)):
            x[n, c, i, j] += col[(n * OH + oh) * OW + ow, (c * k[0] + kh) * k[1] + kw]
    return x


def _targets(t: np.ndarray, N: int, K: int) -> np.ndarray:
    """Int labels (N,) or one-hot / probability rows (N, K) -> float rows (N, K)."""
    t = np.asarray(t)
    if t.shape == (N,) and np.issubdtype(t.dtype, np.integer):
        if t.min(initial=0) < 0 or t.max(initial=0) >= K:
            raise ValueError(f"cross_entropy: labels must be in [0, {K}), got {t}")
        return np.eye(K)[t]
    if t.shape == (N, K):
        return t.astype(np.float64)
    raise ValueError(f"cross_entropy: targets {t.shape} {t.dtype} vs logits {(N, K)}")


def log_softmax_naive(z: np.ndarray) -> np.ndarray:
    """Row-wise ``z - max - log(sum(exp(z - max)))``. z (N, K) -> (N, K)."""
    out = np.zeros(z.shape)
    for n in range(z.shape[0]):
        row = [float(v) for v in z[n]]
        m = max(row)
        log_sum = math.log(math.fsum(math.exp(v - m) for v in row))
        out[n] = [(v - m) - log_sum for v in row]
    return out


def softmax_cross_entropy_naive(z: np.ndarray, t: np.ndarray) -> float:
    """Mean over rows of ``-sum_k t[n, k] * log_softmax(z)[n, k]``.

    z (N, K) logits; t int labels (N,) or one-hot rows (N, K) -> scalar loss.
    """
    N, K = z.shape
    t, logp = _targets(t, N, K), log_softmax_naive(z)
    rows = [-math.fsum(t[n, k] * logp[n, k] for k in range(K)) for n in range(N)]
    return math.fsum(rows) / N


def softmax_cross_entropy_naive_grad(z: np.ndarray, t: np.ndarray, g: float = 1.0) -> np.ndarray:
    """``g * (softmax(z) * sum_k t[n, k] - t) / N``; for one-hot targets ``g * (softmax - t) / N``.

    z (N, K), t (N,) or (N, K), scalar upstream g -> gz (N, K).
    """
    N, K = z.shape
    t, logp = _targets(t, N, K), log_softmax_naive(z)
    gz = np.zeros((N, K))
    for n, k in itertools.product(range(N), range(K)):
        gz[n, k] = float(g) * (math.exp(logp[n, k]) * math.fsum(t[n]) - t[n, k]) / N
    return gz


def max_pool2d_naive_gather(
    x: np.ndarray, z: np.ndarray, kernel: Pair, stride: Pair | None = None, padding: Pair = 0
) -> np.ndarray:
    """``z`` read at the position where each window of ``x`` has its (first) maximum.

    x, z (N, C, H, W) -> (N, C, OH, OW): the adjoint of ``max_pool2d_naive_grad`` in ``gy``.
    """
    k, s, p, out = _pool_geometry(x, kernel, stride, padding)
    y = np.zeros((*x.shape[:2], *out))
    for n, c, oh, ow in _pool_windows(x, out):
        y[n, c, oh, ow] = z[(n, c, *_argmax_window(x, n, c, oh, ow, k, s, p))]
    return y


# ------------------------------------------------------------------ the ops of issue 12
# Scalar formulas applied element by element (math, not NumPy's vectorised code), and loops.


def elementwise(fn) -> np.ufunc:
    """A Python scalar function as a float64 elementwise function (``np.vectorize``)."""
    return np.vectorize(lambda v: float(fn(float(v))), otypes=[np.float64])


erf_naive = elementwise(math.erf)
gelu_naive = elementwise(lambda v: v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))))
gelu_tanh_naive = elementwise(
    lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
)


def softplus_naive(x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    return elementwise(lambda v: math.log(1.0 + math.exp(beta * v)) / beta)(x)


def elu_naive(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return elementwise(lambda v: v if v > 0 else alpha * (math.exp(v) - 1.0))(x)


def leaky_relu_naive(x: np.ndarray, slope: float = 0.01) -> np.ndarray:
    return elementwise(lambda v: v if v > 0 else slope * v)(x)


def bce_with_logits_naive(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The textbook form ``-[t log s + (1 - t) log(1 - s)]``, s = sigmoid(x) (moderate x only)."""
    s = 1.0 / (1.0 + np.exp(-x))
    return -(t * np.log(s) + (1 - t) * np.log(1 - s))


def cat_naive(arrays: list[np.ndarray], axis: int) -> np.ndarray:
    """Each input copied into its block of a zero array."""
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    out, at = np.zeros(shape), 0
    for a in arrays:
        index = [slice(None)] * a.ndim
        index[axis] = slice(at, at + a.shape[axis])
        out[tuple(index)] = a
        at += a.shape[axis]
    return out


def pad_naive(x: np.ndarray, widths: list[tuple[int, int]], mode: str, value: float = 0.0):
    """Every output element looked up by index: constant fill, or the mirrored input index."""
    shape = [n + lo + hi for n, (lo, hi) in zip(x.shape, widths, strict=True)]
    out = np.full(shape, float(value))
    for pos in itertools.product(*(range(n) for n in shape)):
        src = []
        for i, n, (lo, _) in zip(pos, x.shape, widths, strict=True):
            j = i - lo
            if mode == "reflect":
                j = -j if j < 0 else (2 * (n - 1) - j if j >= n else j)
            src.append(j)
        if all(0 <= j < n for j, n in zip(src, x.shape, strict=True)):
            out[pos] = x[tuple(src)]
    return out


def conv_transpose2d_naive(x, w, b=None, stride: Pair = 1, padding: Pair = 0, output_padding=0):
    """Each input pixel scatters ``x[n, c, i, j] * w[c, oc]`` into the output at
    ``(i*SH - PH + kh, j*SW - PW + kw)``; x (N, C, H, W), w (C, OC, KH, KW)."""
    (SH, SW), (PH, PW), (OPH, OPW) = _pair(stride), _pair(padding), _pair(output_padding)
    N, C, H, W = x.shape
    _, OC, KH, KW = w.shape
    OH, OW = (H - 1) * SH - 2 * PH + KH + OPH, (W - 1) * SW - 2 * PW + KW + OPW
    y = np.zeros((N, OC, OH, OW)) + (0.0 if b is None else np.asarray(b)[:, None, None])
    for n, c, i, j, oc, kh, kw in itertools.product(
        range(N), range(C), range(H), range(W), range(OC), range(KH), range(KW)
    ):
        oh, ow = i * SH - PH + kh, j * SW - PW + kw
        if 0 <= oh < OH and 0 <= ow < OW:
            y[n, oc, oh, ow] += float(x[n, c, i, j]) * float(w[c, oc, kh, kw])
    return y


def batch_norm_naive(x, gamma, beta, mean=None, var=None, eps: float = 1e-5) -> np.ndarray:
    """Channel by channel (axis 1): ``gamma * (v - mean) / sqrt(var + eps) + beta``, with the
    channel's own mean and biased variance (training) unless ``mean``/``var`` are given."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        v = x[:, c]
        if mean is None:
            mu = float(np.sum(v)) / v.size
            s2 = float(np.sum((v - mu) ** 2)) / v.size
        else:
            mu, s2 = float(mean[c]), float(var[c])
        out[:, c] = gamma[c] * (v - mu) / math.sqrt(s2 + eps) + beta[c]
    return out


@contextmanager
def live_writer() -> Iterator[subprocess.Popen]:
    """A process that stands for a writer still at work: it has said "ready" when this yields,
    sleeps, and is killed on exit. It resets SIGHUP to its default (under ``nohup`` it would
    inherit it ignored), so any signal sent to it would end it."""
    code = (
        "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
        "print('ready', flush=True); time.sleep(30)"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "ready\n"
        yield writer
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
