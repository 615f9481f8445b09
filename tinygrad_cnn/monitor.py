"""A training monitor on the public hooks: what each layer is doing, every N steps.

Every ``every`` optimizer steps, :class:`Monitor` records per layer

- ``grad_norm``: the L2 norm of each parameter's gradient (the ``.grad`` the step used);
- ``update_ratio``: ``||w_after - w_before|| / ||w_before||`` of each parameter across the
  optimizer step (about 1e-3 is the usual healthy order of magnitude);
- ``act_mean`` / ``act_std``: mean and standard deviation of each leaf module's output;
- ``dead_relu``: for each ``ReLU`` module, the fraction of its units (every output element
  but the batch axis) that are exactly 0 for every sample of the batch; ``zero_frac`` is the
  fraction of all its outputs that are exactly 0.

It observes through ``Module.register_forward_hook`` only, and attaches those hooks for the
recorded step alone: between recorded steps the network runs with no hook and no copy.
Records are plain dicts of JSON-safe numbers (a value that is undefined or not finite, such as
the update ratio of a parameter that is all zeros, is ``None``). ``Trainer(monitor=True)``
stores them in its history under ``"monitor"``; :func:`plot_monitor` draws them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from .nn import Module, ReLU
from .tensor import Tensor

__all__ = ["Monitor", "plot_monitor"]

Record = dict[str, Any]
_NOTHING = contextlib.nullcontext()  # stateless, so one instance serves every skipped step


def _number(x: float) -> float | None:
    """A JSON-safe float: ``None`` for NaN and infinities."""
    x = float(x)
    return x if math.isfinite(x) else None


def _norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(np.ravel(a)))


class _Activations:
    """Pooled output statistics of one leaf module over its calls in the recorded step."""

    def __init__(self, relu: bool) -> None:
        self.relu = relu
        self.n, self.mean, self.m2 = 0, 0.0, 0.0  # Chan's parallel mean / variance
        self.zeros = 0
        self.dead: np.ndarray | None = None  # per unit: zero for every sample so far
        self.dead_defined = True

    def add(self, y: np.ndarray) -> None:
        n = y.size
        if n == 0:
            return
        # NumPy's pairwise sums in (at least) float32 are accurate to ~1e-6 here and twice as
        # fast as float64 ones; one temporary, no y.var() (which is 4x slower)
        acc = np.promote_types(y.dtype, np.float32)
        mean = float(y.sum(dtype=acc)) / n
        d = np.subtract(y, mean, dtype=acc)
        m2 = float(np.square(d, out=d).sum())
        total = self.n + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.n * n / total
        self.mean += delta * n / total
        self.n = total
        if not self.relu:
            return
        is_zero = y == 0
        self.zeros += int(np.count_nonzero(is_zero))
        units = is_zero.reshape(len(y), -1) if y.ndim else is_zero.reshape(1, 1)  # (N, units)
        dead = units.all(axis=0)
        if self.dead is None:
            self.dead = dead
        elif self.dead.shape == dead.shape:
            self.dead &= dead
        else:  # called on inputs of different shapes: units do not line up
            self.dead_defined = False

    def summary(self) -> tuple[float | None, float | None, float | None, float | None]:
        """(mean, std, dead fraction, zero fraction); the last two None unless a ReLU."""
        if self.n == 0:
            return None, None, None, None
        std = math.sqrt(max(self.m2 / self.n, 0.0))
        if not self.relu or self.dead is None:
            return _number(self.mean), _number(std), None, None
        dead = float(self.dead.mean()) if self.dead_defined and self.dead.size else None
        return _number(self.mean), _number(std), dead, self.zeros / self.n


def _leaf_modules(network: Module) -> list[tuple[str, Module]]:
    """(dotted name, module) of every module without sub-modules, in registration order."""
    leaves = []
    for name, m in network.named_modules():
        if next(islice(m.named_modules(), 1, None), None) is None:
            leaves.append((name or type(m).__name__, m))
    return leaves


class Monitor:
    """Record per-layer training statistics every ``every`` steps (see the module docstring).

    Parameters
    ----------
    every : int
        Record the steps whose number is a multiple of ``every`` (steps count from 0, so the
        first step is always recorded).

    Attributes
    ----------
    records : list of dict
        One record per recorded step: ``step`` and the dicts ``grad_norm`` and
        ``update_ratio`` (by parameter name), ``act_mean`` and ``act_std`` (by leaf module
        name), ``dead_relu`` and ``zero_frac`` (by ReLU module name).

    Examples
    --------
    >>> mon = Monitor(every=10)
    >>> for i, (x, t) in enumerate(batches):                              # doctest: +SKIP
    ...     with mon.watch(net, i):
    ...         opt.zero_grad(); net.loss(x, t).backward(); opt.step()
    >>> mon.records[0]["grad_norm"]["conv1.weight"]                       # doctest: +SKIP
    """

    def __init__(self, every: int = 50) -> None:
        if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
            raise ValueError(f"Monitor: every must be a positive int, got {every!r}")
        self.every = int(every)
        self.records: list[Record] = []

    def __repr__(self) -> str:
        return f"Monitor(every={self.every}, records={len(self.records)})"

    def due(self, step: int) -> bool:
        """Whether step number ``step`` (counting from 0) is one this monitor records."""
        return step % self.every == 0

    def watch(self, network: Module, step: int) -> AbstractContextManager[Any]:
        """Wrap one training step: records it if it is due, else does nothing at all.

        The block must run the forward pass, ``backward`` and the optimizer step.
        """
        if step % self.every:
            return _NOTHING
        return self.record(network, step)

    @contextlib.contextmanager
    def record(self, network: Module, step: int) -> Iterator[None]:
        """Record the step run inside the block as step number ``step``, due or not.

        On entry it copies the parameters and attaches a forward hook to every leaf module;
        on exit it removes the hooks and appends the record. If the block raises, the hooks
        are removed and nothing is recorded.
        """
        if not isinstance(network, Module):
            raise TypeError(f"Monitor.record: network must be a Module, got {type(network)}")
        params = list(network.named_parameters())
        before = {name: p.numpy().copy() for name, p in params}
        acts: dict[str, _Activations] = {}
        handles = []
        try:
            for name, m in _leaf_modules(network):
                acts[name] = _Activations(isinstance(m, ReLU))
                handles.append(m.register_forward_hook(self._hook(acts[name])))
            yield
        finally:
            for handle in handles:
                handle.remove()
        record: Record = {"step": int(step), "grad_norm": {}, "update_ratio": {}}
        for name, p in params:
            g = p.grad.numpy() if isinstance(p.grad, Tensor) else p.grad
            record["grad_norm"][name] = None if g is None else _number(_norm(g))
            w0 = before[name]
            size = _norm(w0)
            np.subtract(p.numpy(), w0, out=w0)  # reuse the copy for the update: w1 - w0
            record["update_ratio"][name] = _number(_norm(w0) / size) if size > 0 else None
        summaries = {name: a.summary() for name, a in acts.items()}
        record["act_mean"] = {name: s[0] for name, s in summaries.items()}
        record["act_std"] = {name: s[1] for name, s in summaries.items()}
        record["dead_relu"] = {name: s[2] for name, s in summaries.items() if acts[name].relu}
        record["zero_frac"] = {name: s[3] for name, s in summaries.items() if acts[name].relu}
        self.records.append(record)

    @staticmethod
    def _hook(stats: _Activations) -> Any:
        def hook(module: Module, inputs: tuple[Any, ...], output: Any) -> None:
            # .numpy(): the plain array (read only here), not the write-counting .data view
            y = output.numpy() if isinstance(output, Tensor) else output
            if isinstance(y, np.ndarray):
                stats.add(y)

        return hook


# ----------------------------------------------------------------------------------- plot
_PANELS = (
    ("grad_norm", "gradient L2 norm", "log"),
    ("update_ratio", "update / weight ratio", "log"),
    ("act_std", "activation std", "linear"),
    ("dead_relu", "dead ReLU fraction", "linear"),
)


def plot_monitor(history: Mapping[str, Any] | Sequence[Record], path: str | Path) -> Path:
    """Draw the monitor's records to a PNG: a 2x2 grid, one line per layer.

    Panels: gradient norms and update/weight ratios (log scale), activation std and the
    dead-ReLU fraction, each against the step number.

    Parameters
    ----------
    history : dict or list of dict
        A ``Trainer`` history with a ``"monitor"`` entry, or the records themselves.
    path : str or Path
        The PNG to write (atomically).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ImportError
        matplotlib is not installed.
    ValueError
        There are no records.
    """
    records = history.get("monitor") if isinstance(history, Mapping) else history
    if not records:
        raise ValueError(
            "plot_monitor: no monitor records to draw (train with Trainer(monitor=True), or "
            "pass the records of a Monitor)"
        )
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plot_monitor needs matplotlib: pip install 'tinygrad_cnn[plot]'"
        ) from None
    from .io import atomic_write

    steps = [r["step"] for r in records]
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    for ax, (key, title, scale) in zip(fig.subplots(2, 2).flat, _PANELS, strict=True):
        names = list(dict.fromkeys(n for r in records for n in r.get(key, {})))
        for name in names:
            ys = [r.get(key, {}).get(name) for r in records]
            ax.plot(steps, [np.nan if y is None else y for y in ys], marker=".", label=name)
        if key == "update_ratio":
            ax.axhline(1e-3, color="grey", linestyle="--", linewidth=0.8)
        if key == "dead_relu":
            ax.set_ylim(-0.02, 1.02)
        has_positive = any(
            y is not None and y > 0 for r in records for y in r.get(key, {}).values()
        )
        ax.set_yscale(scale if has_positive else "linear")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize="small")
    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=90)
    return path
