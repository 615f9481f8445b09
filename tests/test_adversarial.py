"""A catalogue of bad inputs (issue 13): what an attacker or a careless user would try.

Each row of ``CATALOGUE`` is one bad input: an id (``area-what-how``, readable in
``pytest -v``), the area, what to do (``act``, after an
optional ``prep`` that builds the user's state), the exact exception type expected (or, for the
CLI, the exit code), words the message must contain (the argument, and the shapes where shapes
are involved), and which of the user's state must come out unchanged (``state``: files on disk,
network parameters, optimizer state, trainer progress, or a case-specific snapshot).

Areas: ``ops`` (functional wrappers: shapes, ranks, dtypes, geometries, axes, labels),
``tensors`` (the Python API around them: Tensor, backward, hooks, grad, modules, optimizers,
batches), ``files`` (parameter files, npz, book pickles, atomic writes, IDX), ``checkpoints``
(``Trainer.load_checkpoint`` / ``save_checkpoint``) and ``cli`` (``tinygrad_cnn.cli.main``).

``test_bad_input`` runs every row; ``test_catalogue_size`` keeps the catalogue from shrinking.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, grad
from tinygrad_cnn import io as tio
from tinygrad_cnn.cli import main
from tinygrad_cnn.data import BatchIterator
from tinygrad_cnn.nn import Linear, SimpleConvNet
from tinygrad_cnn.optim import SGD, Adam, get_optimizer
from tinygrad_cnn.picklesafe import load_book_pickle
from tinygrad_cnn.train import Trainer

AREAS = ("ops", "tensors", "files", "checkpoints", "cli")
MIN_TOTAL, MIN_PER_AREA = 60, 10


# ---------------------------------------------------------------------------- the user's world
class Env:
    """The user's state for one case, built lazily in a fresh ``tmp`` folder.

    ``prep`` functions store whatever else they build as attributes (``env.a = ...``). Files
    and folders a case crafts as its bad input (``write``, ``mkdir``) are not the user's, so
    the ``files`` state leaves them out; every other file must come out byte for byte the same,
    and no new file may appear.
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.crafted: set[str] = set()

    @cached_property
    def net(self) -> SimpleConvNet:
        return SimpleConvNet(seed=0)

    @cached_property
    def params_file(self) -> Path:
        path = self.tmp / "params.npz"
        self.net.save_params(path)
        return path

    @cached_property
    def trainer(self) -> Trainer:
        """A trainer that has run one epoch (two steps) and written ``checkpoint.npz``."""
        rng = np.random.default_rng(0)
        x = rng.random((20, 1, 28, 28), dtype=np.float32)
        t = rng.integers(0, 10, 20)
        trainer = Trainer(
            self.net, x, t, x[:10], t[:10], epochs=1, mini_batch_size=10,
            verbose=False, seed=0, checkpoint=self.tmp / "checkpoint.npz",
        )  # fmt: skip
        trainer.train()
        return trainer

    @cached_property
    def checkpoint(self) -> Path:
        _ = self.trainer
        return self.tmp / "checkpoint.npz"

    def write(self, name: str, content: bytes) -> Path:
        self.crafted.add(name)
        path = self.tmp / name
        path.write_bytes(content)
        return path

    def mkdir(self, name: str) -> Path:
        self.crafted.add(name)
        path = self.tmp / name
        path.mkdir()
        return path

    def edited_checkpoint(self, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
        """A copy of ``checkpoint`` with ``edit`` applied to its arrays (meta as a dict)."""
        arrays = tio.load_npz(self.checkpoint)
        arrays["meta"] = json.loads(str(arrays["meta"]))
        edit(arrays)
        if isinstance(arrays["meta"], dict):
            arrays["meta"] = np.array(json.dumps(arrays["meta"]))
        self.crafted.add(name)
        path = self.tmp / name
        tio.save_npz(path, arrays)
        return path


def snapshot(env: Env, what: Iterable[str | Callable[[Env], Any]]) -> dict[str, Any]:
    """The parts of the user's state named in ``what``, copied."""
    out: dict[str, Any] = {}
    for item in what:
        if callable(item):
            out["custom"] = item(env)
        elif item == "files":  # every file under tmp, by content (special files by kind)
            out["files"] = {
                str(p.relative_to(env.tmp)): p.read_bytes() if p.is_file() else p.is_dir()
                for p in sorted(env.tmp.rglob("*"))
                if p.relative_to(env.tmp).parts[0] not in env.crafted
            }
        elif item == "net":
            out["net"] = env.net.state_dict()
        elif item == "optim":
            out["optim"] = env.trainer.optimizer.state_dict()
        elif item == "trainer":
            tr = env.trainer
            out["trainer"] = (tr.epoch, json.dumps(tr.history), json.dumps(tr.batches.state_dict()))
        else:
            raise AssertionError(f"unknown state {item!r}")
    return out


def assert_same(before: Any, after: Any, where: str = "state") -> None:
    if isinstance(before, dict):
        assert isinstance(after, dict) and before.keys() == after.keys(), where
        for k in before:
            assert_same(before[k], after[k], f"{where}[{k!r}]")
    elif isinstance(before, list | tuple):
        assert len(before) == len(after), where
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            assert_same(b, a, f"{where}[{i}]")
    elif isinstance(before, np.ndarray) or isinstance(after, np.ndarray):
        assert np.array_equal(before, after, equal_nan=True), f"{where} changed"
        assert np.asarray(before).dtype == np.asarray(after).dtype, f"{where} dtype changed"
    else:
        assert before == after, f"{where} changed: {before!r} -> {after!r}"


# ---------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    id: str
    area: str
    act: Callable[[Env], Any]
    error: type[BaseException] | int  # an exception type, or a CLI exit code
    words: tuple[str, ...]
    state: tuple[str | Callable[[Env], Any], ...] = ()
    prep: Callable[[Env], Any] | None = None
    marks: tuple[Any, ...] = field(default=())


CATALOGUE: list[Case] = []


def case(
    id: str,  # noqa: A002
    act: Callable[[Env], Any],
    error: type[BaseException] | int,
    *words: str,
    state: tuple[str | Callable[[Env], Any], ...] = (),
    prep: Callable[[Env], Any] | None = None,
    xfail: str | None = None,
) -> None:
    marks = (pytest.mark.xfail(strict=True, reason=xfail),) if xfail else ()
    area = id.split("-", 1)[0]
    CATALOGUE.append(Case(id, area, act, error, words, state, prep, marks))


def cli(*argv: str | Callable[[Env], Any]) -> Callable[[Env], tuple[int, str]]:
    """Run ``main(argv)`` in the env's folder (so a regression that writes to the current
    folder is caught by the ``files`` state); arguments may be functions of the env (paths).
    Returns (exit code, stderr)."""

    def run(env: Env) -> tuple[int, str]:
        args = [a(env) if callable(a) else a for a in argv]
        err, cwd = io.StringIO(), os.getcwd()
        os.chdir(env.tmp)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code
        finally:
            os.chdir(cwd)
        return code, err.getvalue()

    return run


def t32(*shape: int, grad: bool = False) -> Tensor:
    return Tensor(np.ones(shape, np.float32), requires_grad=grad)


def npz_bytes(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


BOOK_SHAPES = {
    "W1": (30, 1, 5, 5), "b1": (30,), "W2": (4320, 100), "b2": (100,), "W3": (100, 10), "b3": (10,),
}  # fmt: skip


def book(**override: Any) -> dict[str, Any]:
    params = {k: np.zeros(s, np.float32) for k, s in BOOK_SHAPES.items()}
    params.update(override)
    return {k: v for k, v in params.items() if v is not None}


def net_arrays(env: Env, **override: Any) -> dict[str, Any]:
    arrays = env.net.state_dict()
    arrays.update(override)
    return {k: v for k, v in arrays.items() if v is not None}


# The table below is laid out by hand, one case per call, so that it reads as a catalogue.
# fmt: off
# ============================================================================ ops
X4 = np.ones((2, 1, 8, 8), np.float32)
W4 = np.ones((3, 1, 3, 3), np.float32)

case("ops-conv2d-x-3d", lambda e: F.conv2d(np.ones((1, 8, 8), np.float32), W4), ValueError,
     "conv2d", "4-D", "(1, 8, 8)")
case("ops-conv2d-w-3d", lambda e: F.conv2d(X4, np.ones((3, 3, 3), np.float32)), ValueError,
     "conv2d", "w", "(3, 3, 3)")
case("ops-conv2d-channel-mismatch", lambda e: F.conv2d(X4, np.ones((3, 2, 3, 3), np.float32)),
     ValueError, "conv2d", "channel", "(2, 1, 8, 8)", "(3, 2, 3, 3)")
case("ops-conv2d-bias-shape", lambda e: F.conv2d(X4, W4, np.ones(4, np.float32)), ValueError,
     "conv2d", "b", "(3,)", "(4,)")
case("ops-conv2d-stride-zero", lambda e: F.conv2d(X4, W4, stride=0), ValueError,
     "conv2d", "stride", "(0, 0)")
case("ops-conv2d-padding-negative", lambda e: F.conv2d(X4, W4, padding=-1), ValueError,
     "conv2d", "padding", "(-1, -1)")
case("ops-conv2d-stride-float", lambda e: F.conv2d(X4, W4, stride=1.5), TypeError,
     "conv2d", "stride", "1.5")
case("ops-conv2d-padding-triple", lambda e: F.conv2d(X4, W4, padding=(1, 1, 1)), TypeError,
     "conv2d", "padding", "(1, 1, 1)")
case("ops-conv2d-kernel-larger-than-input",
     lambda e: F.conv2d(X4, np.ones((3, 1, 9, 9), np.float32)), ValueError,
     "conv2d", "kernel 9x9", "(2, 1, 8, 8)")
case("ops-conv2d-string-stride", lambda e: F.conv2d(X4, W4, stride="2"), TypeError,
     "conv2d", "stride", "'2'")
case("ops-max-pool-kernel-zero", lambda e: F.max_pool2d(X4, 0), ValueError,
     "max_pool2d", "kernel", "(0, 0)")
case("ops-max-pool-padding-over-half", lambda e: F.max_pool2d(X4, 2, padding=2), ValueError,
     "max_pool2d", "padding", "(2, 2)")
case("ops-max-pool-input-2d", lambda e: F.max_pool2d(np.ones((8, 8), np.float32), 2), ValueError,
     "max_pool2d", "4-D", "(8, 8)")
case("ops-max-pool-stride-negative", lambda e: F.max_pool2d(X4, 2, stride=-1), ValueError,
     "max_pool2d", "stride", "(-1, -1)")
case("ops-avg-pool-kernel-larger", lambda e: F.avg_pool2d(X4, 9), ValueError,
     "avg_pool2d", "kernel 9x9", "(2, 1, 8, 8)")
case("ops-im2col-input-3d", lambda e: F.im2col(np.ones((1, 8, 8)), 3), ValueError,
     "im2col", "4-D", "(1, 8, 8)")
case("ops-col2im-col-shape", lambda e: F.col2im(np.ones((5, 9)), (2, 1, 8, 8), 3), ValueError,
     "col2im", "(5, 9)", "(72, 9)")
case("ops-col2im-x-shape-int", lambda e: F.col2im(np.ones((5, 9)), 5, 3), TypeError,
     "col2im", "x_shape", "5")
case("ops-matmul-vector", lambda e: F.matmul(np.ones(3, np.float32), np.ones((3, 2))),
     ValueError, "matmul", "(3,)", "(3, 2)")
case("ops-matmul-inner-mismatch", lambda e: t32(2, 3) @ t32(4, 5), ValueError,
     "matmul", "(2, 3)", "(4, 5)")
case("ops-matmul-batch-mismatch", lambda e: t32(2, 2, 3) @ t32(3, 3, 4), ValueError,
     "matmul", "(2, 2, 3)", "(3, 3, 4)")
case("ops-linear-shape-mismatch", lambda e: F.linear(t32(2, 3), t32(4, 5)), ValueError,
     "linear", "(2, 3)", "(4, 5)")
case("ops-linear-bias-shape", lambda e: F.linear(t32(2, 3), t32(3, 5), t32(3)), ValueError,
     "linear", "b", "(5,)", "(3,)")
case("ops-add-not-broadcastable", lambda e: t32(2, 3) + t32(4), ValueError,
     "add", "(2, 3)", "(4,)")
case("ops-pow-tensor-exponent", lambda e: t32(2) ** t32(2), TypeError, "pow", "exponent")
case("ops-pow-string-exponent", lambda e: t32(2) ** "2", TypeError, "pow", "exponent")
case("ops-sum-axis-out-of-range", lambda e: t32(2, 3).sum(axis=2), ValueError,
     "sum", "axis 2", "2 dims")
case("ops-sum-axis-repeated", lambda e: t32(2, 3).sum(axis=(0, 0)), ValueError,
     "sum", "repeated axis")
case("ops-sum-axis-float", lambda e: t32(2, 3).sum(axis=1.0), TypeError, "sum", "axis", "1.0")
case("ops-mean-axis-string", lambda e: t32(2, 3).mean(axis="0"), TypeError, "mean", "axis", "'0'")
case("ops-max-axis-tuple", lambda e: t32(2, 3).max(axis=(0, 1)), TypeError, "max", "axis")
case("ops-max-empty", lambda e: F.max(np.ones((0, 3), np.float32)), ValueError,
     "max", "empty", "(0, 3)")
case("ops-softmax-axis-out-of-range", lambda e: F.softmax(t32(2, 3), axis=5), ValueError,
     "softmax", "axis 5")
case("ops-reshape-wrong-size", lambda e: t32(2, 3).reshape(4, 2), ValueError,
     "reshape", "(2, 3)", "(4, 2)")
case("ops-reshape-float-dims", lambda e: t32(2, 3).reshape(3.0, 2), TypeError,
     "reshape", "shape", "3.0")
case("ops-permute-not-permutation", lambda e: t32(2, 3).permute(0, 0), ValueError,
     "transpose", "(0, 0)", "(2, 3)")
case("ops-transpose-too-many-axes", lambda e: t32(2, 3).transpose(0, 1, 2), ValueError,
     "transpose", "(0, 1, 2)", "(2, 3)")
case("ops-transpose-axis-out-of-range", lambda e: t32(2, 3).transpose(0, 5), ValueError,
     "transpose", "axis 5", "(2, 3)")
case("ops-transpose-axes-strings", lambda e: t32(2, 3).transpose("ab"), TypeError,
     "transpose", "axes", "'ab'")
case("ops-flatten-float-start-dim", lambda e: t32(2, 3).flatten(1.5), TypeError,
     "flatten", "start_dim", "1.5")
case("ops-sum-keepdims-string", lambda e: t32(2, 3).sum(keepdims="no"), TypeError,
     "sum", "keepdims", "'no'")
case("ops-flatten-start-dim", lambda e: t32(2, 3).flatten(2), ValueError,
     "flatten", "start_dim 2", "(2, 3)")
case("ops-getitem-out-of-range", lambda e: t32(2, 3)[5], IndexError, "getitem", "5", "(2, 3)")
case("ops-getitem-float-index", lambda e: t32(2, 3)[0.5], IndexError, "getitem", "(2, 3)")
case("ops-ce-label-out-of-range",
     lambda e: F.softmax_cross_entropy(t32(2, 3), np.array([0, 3])), ValueError,
     "softmax_cross_entropy", "labels", "[0, 3)", "(2, 3)")
case("ops-ce-label-negative",
     lambda e: F.softmax_cross_entropy(t32(2, 3), np.array([-1, 0])), ValueError,
     "softmax_cross_entropy", "labels", "-1")
case("ops-ce-labels-wrong-length",
     lambda e: F.softmax_cross_entropy(t32(2, 3), np.array([0, 1, 2])), ValueError,
     "softmax_cross_entropy", "labels", "(3,)", "(2, 3)")
case("ops-ce-float-labels",
     lambda e: F.softmax_cross_entropy(t32(2, 3), np.array([0.0, 1.0])), ValueError,
     "softmax_cross_entropy", "labels", "integers", "float64")
case("ops-ce-one-hot-wrong-shape",
     lambda e: F.softmax_cross_entropy(t32(2, 3), np.ones((2, 4), np.float32)), ValueError,
     "softmax_cross_entropy", "labels", "(2, 4)", "(2, 3)")
case("ops-ce-string-labels",
     lambda e: F.softmax_cross_entropy(t32(2, 3), np.array(["0", "1"])), TypeError,
     "softmax_cross_entropy", "labels", "<U1")
case("ops-ce-labels-3d",
     lambda e: F.softmax_cross_entropy(t32(2, 3), np.zeros((2, 3, 1), np.int64)), ValueError,
     "softmax_cross_entropy", "labels", "(2, 3, 1)")
case("ops-ce-logits-1d", lambda e: F.softmax_cross_entropy(t32(3), np.array([0])), ValueError,
     "softmax_cross_entropy", "logits", "(3,)")
case("ops-ce-integer-logits",
     lambda e: F.softmax_cross_entropy(Tensor(np.ones((2, 3), np.int64)), np.array([0, 1])),
     TypeError, "softmax_cross_entropy", "logits", "int64")
case("ops-ce-empty-batch",
     lambda e: F.softmax_cross_entropy(t32(0, 3), np.zeros(0, np.int64)), ValueError,
     "softmax_cross_entropy", "empty batch", "(0, 3)")


# ============================================================================ tensors
def _inplace(e: Env) -> None:
    e.a, e.b = t32(2, grad=True), Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    e.y = (e.a * e.b).sum()
    e.b.data[...] = 0


def _grads(e: Env) -> list[Any]:
    return [e.a.grad, e.b.grad]


def _hooked(e: Env) -> None:
    e.a, e.b = t32(2, 3, grad=True), t32(2, 3, grad=True)
    h = e.a * 2
    h.register_hook(lambda g: np.ones(3))
    e.y = (h * e.b).sum()


def _two_params(e: Env) -> None:
    e.a, e.b = t32(3, grad=True), t32(2, grad=True)
    e.opt = Adam([e.a, e.b], lr=0.1)
    e.a.grad, e.b.grad = np.ones(3, np.float32), np.ones(3, np.float32)  # b's is mis-shaped


def _params_and_state(e: Env) -> list[Any]:
    return [e.a.data.copy(), e.b.data.copy(), e.opt.state_dict()]


def _linear(e: Env) -> None:
    e.layer = Linear(3, 2, rng=0)


def _layer_state(e: Env) -> Any:
    return e.layer.state_dict()


def _optim(e: Env) -> None:
    e.a = t32(3, grad=True)
    e.opt = SGD([e.a], lr=0.1)
    e.a.grad = np.ones(3, np.float32)
    e.opt.step()


def _optim_state(e: Env) -> Any:
    return [e.a.data.copy(), e.opt.state_dict()]


case("tensors-string-data", lambda e: Tensor("abc"), TypeError, "Tensor", "str")
case("tensors-none-data", lambda e: Tensor(None), TypeError, "Tensor", "NoneType")
case("tensors-object-array", lambda e: Tensor(np.array([object()])), TypeError,
     "Tensor", "dtype object")
case("tensors-string-array", lambda e: Tensor(np.array(["1.0"])), TypeError, "Tensor", "<U3")
case("tensors-complex-array", lambda e: Tensor(np.ones(2, np.complex64)), TypeError,
     "Tensor", "complex64")
case("tensors-ragged-list", lambda e: Tensor([[1.0, 2.0], [3.0]]), TypeError,
     "Tensor", "ragged list")
case("tensors-requires-grad-int", lambda e: Tensor(np.arange(3), requires_grad=True), TypeError,
     "require grad", "int64")
case("tensors-backward-non-scalar", lambda e: (t32(2, 3, grad=True) * 2).backward(),
     RuntimeError, "backward", "(2, 3)")
case("tensors-backward-without-graph", lambda e: t32(2).sum().backward(), RuntimeError,
     "backward", "requires_grad")


def _backward_once(e: Env) -> None:
    e.a = t32(2, grad=True)
    e.y = (e.a * e.a).sum()
    e.y.backward()


case("tensors-backward-twice", lambda e: e.y.backward(), RuntimeError,
     "backward", "freed", "retain_graph", prep=_backward_once, state=(lambda e: e.a.grad,))
case("tensors-backward-grad-shape", lambda e: (t32(2, 3, grad=True) * 2).backward(np.ones(3)),
     ValueError, "backward", "grad", "(3,)", "(2, 3)")
case("tensors-backward-grad-dtype",
     lambda e: (t32(2, grad=True) * 2).backward(np.array(["a", "b"])), TypeError,
     "backward", "grad", "<U1")
case("tensors-inplace-then-backward", lambda e: e.y.backward(), RuntimeError,
     "changed in place", "Mul", "(2,)", prep=_inplace, state=(_grads,))
case("tensors-hook-wrong-shape", lambda e: e.y.backward(), RuntimeError,
     "register_hook", "(3,)", "(2, 3)", prep=_hooked, state=(_grads,))
case("tensors-hook-not-callable", lambda e: t32(2, grad=True).register_hook(3), TypeError,
     "register_hook", "int")
case("tensors-hook-without-grad", lambda e: t32(2).register_hook(print), RuntimeError,
     "register_hook", "require grad")
case("tensors-retain-grad-without-grad", lambda e: t32(2).retain_grad(), RuntimeError,
     "retain_grad", "require grad")
case("tensors-item-non-scalar", lambda e: t32(2, 3).item(), ValueError, "item", "(2, 3)")
case("tensors-data-set-strings", lambda e: setattr(t32(2), "data", np.array(["a"])), TypeError,
     "Tensor.data", "<U1")
case("tensors-grad-unused-input",
     lambda e: grad((t32(2, grad=True) * 2).sum(), t32(3, grad=True)), RuntimeError,
     "grad", "input 0", "(3,)", "allow_unused")
case("tensors-grad-non-tensor-input",
     lambda e: grad((t32(2, grad=True) * 2).sum(), [np.ones(2)]), TypeError,
     "grad", "inputs[0]", "ndarray")
case("tensors-grad-outputs-count",
     lambda e: grad((t32(2, grad=True) * 2).sum(), t32(2, grad=True), [1.0, 2.0]), ValueError,
     "grad", "2 grad_outputs", "1 outputs")
case("tensors-forward-hook-not-callable", lambda e: Linear(2, 2).register_forward_hook(None),
     TypeError, "register_forward_hook", "NoneType")
case("tensors-load-state-dict-missing", lambda e: e.layer.load_state_dict({"weight": 0}),
     ValueError, "load_state_dict", "bias", prep=_linear, state=(_layer_state,))
case("tensors-load-state-dict-shape",
     lambda e: e.layer.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(3)}),
     ValueError, "bias", "(3,)", "(2,)", prep=_linear, state=(_layer_state,))
case("tensors-load-state-dict-strings",
     lambda e: e.layer.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.array(["a", "b"])}),
     ValueError, "bias", "<U1", prep=_linear, state=(_layer_state,))
case("tensors-load-state-dict-none", lambda e: e.layer.load_state_dict(None), TypeError,
     "load_state_dict", "state", "NoneType", prep=_linear, state=(_layer_state,))
case("tensors-optim-unknown-name", lambda e: get_optimizer("adamw", [t32(2, grad=True)]),
     ValueError, "adamw", "sgd")
case("tensors-optim-unknown-keyword",
     lambda e: get_optimizer("sgd", [t32(2, grad=True)], momentum=0.9), TypeError,
     "SGD", "momentum")
case("tensors-optim-negative-lr", lambda e: SGD([t32(2, grad=True)], lr=-1), ValueError,
     "lr", "-1")
case("tensors-optim-nan-lr", lambda e: SGD([t32(2, grad=True)], lr=float("nan")), ValueError,
     "lr", "nan")
case("tensors-optim-string-lr", lambda e: SGD([t32(2, grad=True)], lr="fast"), TypeError,
     "lr", "'fast'")
case("tensors-optim-none-lr", lambda e: SGD([t32(2, grad=True)], lr=None), TypeError,
     "lr", "None")
case("tensors-optim-load-state-none", lambda e: e.opt.load_state_dict(None), TypeError,
     "load_state_dict", "NoneType", prep=_optim, state=(_optim_state,))
case("tensors-batches-size-string", lambda e: BatchIterator(np.ones(4), batch_size="ten"),
     TypeError, "BatchIterator", "batch_size", "'ten'")
case("tensors-batches-size-float", lambda e: BatchIterator(np.ones(4), batch_size=2.5),
     TypeError, "BatchIterator", "batch_size", "2.5")
case("tensors-batches-length-mismatch",
     lambda e: BatchIterator(np.ones((4, 2)), np.ones(3)), ValueError,
     "BatchIterator", "(4, 2)", "(3,)")
case("tensors-optim-beta1-one", lambda e: Adam([t32(2, grad=True)], beta1=1.0), ValueError,
     "beta1", "1.0")
case("tensors-optim-int-params", lambda e: SGD([Tensor(np.arange(3))], lr=0.1), TypeError,
     "parameter 0", "floating")
case("tensors-optim-single-tensor", lambda e: SGD(t32(2, grad=True), lr=0.1), TypeError,
     "iterable of parameters")
case("tensors-optim-step-bad-grad-shape", lambda e: e.opt.step(), ValueError,
     "parameter 1", "(3,)", "(2,)", prep=_two_params, state=(_params_and_state,))
case("tensors-optim-load-state-bad-lr",
     lambda e: e.opt.load_state_dict({**e.opt.state_dict(), "lr": -0.5}), ValueError,
     "'lr'", "-0.5", prep=_optim, state=(_optim_state,))
case("tensors-optim-load-state-missing",
     lambda e: e.opt.load_state_dict({"lr": 0.1, "weight_decay": 0.0}), ValueError,
     "state_dict", "parameters", prep=_optim, state=(_optim_state,))


# ============================================================================ files
def _fifo(e: Env) -> None:
    os.mkfifo(e.tmp / "pipe.npz")


def _saved(e: Env) -> None:
    _ = e.params_file


case("files-load-params-missing", lambda e: e.net.load_params(e.tmp / "absent.npz"),
     FileNotFoundError, "absent.npz", state=("net",))
case("files-load-params-directory",
     lambda e: e.net.load_params(e.mkdir("folder.npz")),
     IsADirectoryError, "folder.npz", "directory", state=("net",))
case("files-load-params-empty", lambda e: e.net.load_params(e.write("empty.npz", b"")),
     ValueError, "empty.npz", state=("net",))
case("files-load-params-truncated",
     lambda e: e.net.load_params(e.write("cut.npz", e.params_file.read_bytes()[:5000])),
     ValueError, "cut.npz", prep=_saved, state=("net", "files"))
case("files-load-params-not-zip", lambda e: e.net.load_params(e.write("text.npz", b"hello" * 99)),
     ValueError, "text.npz", state=("net",))
case("files-load-params-wrong-names",
     lambda e: e.net.load_params(e.write("names.npz", npz_bytes(**book()))), ValueError,
     "names.npz", "missing arrays", "conv1.weight", "W1", state=("net",))
case("files-load-params-wrong-shape",
     lambda e: e.net.load_params(e.write("shape.npz", npz_bytes(
         **net_arrays(e, **{"fc2.bias": np.zeros(11, np.float32)})))),
     ValueError, "shape.npz", "fc2.bias", "(11,)", "(10,)", state=("net",))
case("files-load-params-object-array",
     lambda e: e.net.load_params(e.write("obj.npz", npz_bytes(
         **net_arrays(e, **{"fc2.bias": np.array([None] * 10)})))),
     ValueError, "obj.npz", "object", state=("net",))
case("files-load-params-structured-dtype",
     lambda e: e.net.load_params(e.write("struct.npz", npz_bytes(
         **net_arrays(e, **{"fc2.bias": np.zeros(10, "i4,f4")})))),
     ValueError, "struct.npz", "fc2.bias", "dtype", state=("net",))
case("files-load-params-strings",
     lambda e: e.net.load_params(e.write("str.npz", npz_bytes(
         **net_arrays(e, **{"fc2.bias": np.array(["x"] * 10)})))),
     ValueError, "str.npz", "fc2.bias", "<U1", state=("net",))
case("files-load-params-overflow",
     lambda e: e.net.load_params(e.write("big.npz", npz_bytes(
         **net_arrays(e, **{"fc2.bias": np.full(10, 1e300)})))),
     ValueError, "big.npz", "fc2.bias", "overflows", state=("net",))
case("files-load-params-single-npy",
     lambda e: e.net.load_params(e.write("one.npz", _npy_bytes(np.zeros(3)))),
     ValueError, "one.npz", "single .npy", state=("net",))
case("files-load-params-none-path", lambda e: e.net.load_params(None), TypeError,
     "load_params", "path", "NoneType", state=("net",))
case("files-save-params-none-path", lambda e: e.net.save_params(None), TypeError,
     "save_params", "path", "NoneType", state=("net", "files"))
case("files-load-params-fifo", lambda e: e.net.load_params(e.tmp / "pipe.npz"), ValueError,
     "pipe.npz", "FIFO", prep=_fifo, state=("net", "files"))
case("files-book-pickle-directory", lambda e: e.net.load_params(e.mkdir("params.pkl")),
     IsADirectoryError, "params.pkl", "directory", state=("net",))
case("files-save-params-onto-directory",
     lambda e: e.net.save_params(e.tmp / "runs"), ValueError, "runs", "directory",
     prep=lambda e: (e.tmp / "runs").mkdir(), state=("files",))
case("files-save-params-onto-fifo", lambda e: e.net.save_params(e.tmp / "pipe.npz"), ValueError,
     "pipe.npz", "FIFO", prep=_fifo, state=("files",))
case("files-save-params-parent-is-file",
     lambda e: e.net.save_params(e.tmp / "params.npz" / "x.npz"), NotADirectoryError,
     "params.npz", prep=lambda e: e.params_file, state=("files",))
case("files-book-pickle-code",
     lambda e: e.net.load_params(e.write("evil.pkl", pickle.dumps({"W1": _Evil()}))),
     ValueError, "evil.pkl", "refusing", "system", state=("net",))
case("files-book-pickle-wrong-keys",
     lambda e: e.net.load_params(e.write("keys.pkl", pickle.dumps(book(W1=None, w1=np.zeros(3))))),
     ValueError, "keys.pkl", "missing: W1; unexpected: w1", state=("net",))
case("files-book-pickle-wrong-shape",
     lambda e: e.net.load_params(e.write("shape.pkl",
                                         pickle.dumps(book(W3=np.zeros((10, 100), np.float32))))),
     ValueError, "shape.pkl", "(10, 100)", "(100, 10)", state=("net",))
case("files-book-pickle-list", lambda e: e.net.load_params(e.write("list.pkl", pickle.dumps([1]))),
     ValueError, "list.pkl", "list", state=("net",))
case("files-book-pickle-truncated",
     lambda e: e.net.load_params(e.write("cut.pkl", pickle.dumps(book(), protocol=2)[:999])),
     ValueError, "cut.pkl", state=("net",))
case("files-book-pickle-empty", lambda e: e.net.load_params(e.write("empty.pkl", b"")),
     ValueError, "empty.pkl", state=("net",))
case("files-book-pickle-huge-array",
     lambda e: load_book_pickle(e.write("huge.pkl", pickle.dumps({"W1": np.zeros(1000)})), 4000),
     ValueError, "huge.pkl", "4,000 bytes")
case("files-atomic-write-append-mode",
     lambda e: tio.atomic_write(e.params_file, "ab").__enter__(), ValueError,
     "atomic_write", "'ab'", prep=_saved, state=("files",))
case("files-atomic-write-body-raises", lambda e: _write_then_fail(e.params_file), KeyError,
     "disk full", prep=_saved, state=("files",))
case("files-save-npz-int-key", lambda e: tio.save_npz(e.params_file, {1: np.zeros(2)}),
     TypeError, "save_npz", "int", prep=_saved, state=("files",))
case("files-save-npz-object-array",
     lambda e: tio.save_npz(e.params_file, {"x": np.array([{}])}), ValueError,
     "save_npz", "'x'", "object", prep=_saved, state=("files",))
case("files-load-npz-max-bytes", lambda e: tio.load_npz(e.params_file, max_bytes=100), ValueError,
     "params.npz", "100 bytes", prep=_saved, state=("files",))
case("files-load-npz-zip-member",
     lambda e: tio.load_npz(e.write("zip.npz", _zip_with("notes.txt", b"hi"))), ValueError,
     "zip.npz", "notes.txt")
case("files-read-idx-bad-magic",
     lambda e: tio.read_idx(e.write("imgs-idx3-ubyte", b"\x00\x00\x08\x04" + bytes(12))),
     ValueError, "imgs-idx3-ubyte", "magic", "0x00000804")
case("files-read-idx-truncated",
     lambda e: tio.read_idx(e.write("lbl-idx1-ubyte", b"\x00\x00\x08\x01\x00\x00\x00\x05ab")),
     ValueError, "lbl-idx1-ubyte", "truncated", "(5,)")


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _zip_with(name: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, content)
    return buf.getvalue()


def _write_then_fail(path: Path) -> None:
    with tio.atomic_write(path) as f:
        f.write(b"half a file")
        raise KeyError("disk full")


# ============================================================================ checkpoints
ALL = ("net", "optim", "trainer", "files")


def _set_meta(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(arrays: dict[str, Any]) -> None:
        arrays["meta"].update(changes)

    return edit


def _edit_meta(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda arrays: fn(arrays["meta"])


def _load(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[Env], None]:
    return lambda e: e.trainer.load_checkpoint(e.edited_checkpoint(name, edit))


def _ckpt_prep(e: Env) -> None:
    _ = e.checkpoint


def ckpt(id: str, act: Callable[[Env], Any], error: type, *words: str, **kw: Any) -> None:  # noqa: A002
    case(id, act, error, *words, state=ALL, prep=_ckpt_prep, **kw)


ckpt("checkpoints-missing-file", lambda e: e.trainer.load_checkpoint(e.tmp / "nope.npz"),
     FileNotFoundError, "nope.npz")
ckpt("checkpoints-directory",
     lambda e: e.trainer.load_checkpoint(e.mkdir("dir.npz")),
     IsADirectoryError, "dir.npz", "directory")
ckpt("checkpoints-garbage", lambda e: e.trainer.load_checkpoint(e.write("junk.npz", b"\0" * 64)),
     ValueError, "junk.npz")
ckpt("checkpoints-truncated",
     lambda e: e.trainer.load_checkpoint(e.write("cut.npz", e.checkpoint.read_bytes()[:-999])),
     ValueError, "cut.npz")
ckpt("checkpoints-params-file-instead",
     lambda e: e.trainer.load_checkpoint(e.write("p.npz", npz_bytes(**e.net.state_dict()))),
     ValueError, "p.npz", "'meta'")
ckpt("checkpoints-meta-not-json", _load("m1.npz", lambda a: a.update(meta=np.array("{oops"))),
     ValueError, "m1.npz", "metadata", "JSON")
ckpt("checkpoints-meta-a-number", _load("m2.npz", lambda a: a.update(meta=np.array(3.0))),
     ValueError, "m2.npz", "metadata", "'meta'")
ckpt("checkpoints-meta-negative-epoch", _load("m3.npz", _set_meta(epoch=-1)), ValueError,
     "m3.npz", "epoch", "-1")
ckpt("checkpoints-meta-epoch-string", _load("m4.npz", _set_meta(epoch="1")), ValueError,
     "m4.npz", "epoch", "'1'")
ckpt("checkpoints-meta-history-length",
     _load("m5.npz", _edit_meta(lambda m: m["history"]["test_acc"].append(0.5))), ValueError,
     "m5.npz", "test_acc", "2 entries", "1 epochs")
ckpt("checkpoints-meta-history-strings",
     _load("m6.npz", _edit_meta(lambda m: m["history"].update(train_loss=["x"]))), ValueError,
     "m6.npz", "train_loss", "numbers")
ckpt("checkpoints-meta-no-batches", _load("m7.npz", _edit_meta(lambda m: m.pop("batches"))),
     ValueError, "m7.npz", "batches")
ckpt("checkpoints-meta-bad-generator",
     _load("m8.npz", _edit_meta(lambda m: m["batches"]["bit_generator"].update(state=7))),
     ValueError, "m8.npz", "generator")
ckpt("checkpoints-batches-done-too-many",
     _load("m9.npz", _edit_meta(lambda m: m["batches"].update(batches_done=99))), ValueError,
     "m9.npz", "batches_done", "99")
ckpt("checkpoints-other-batch-size",
     _load("b.npz", _edit_meta(lambda m: m["config"].update(batch_size=50))), ValueError,
     "b.npz", "batch size 50", "10")
ckpt("checkpoints-other-training-set",
     _load("n.npz", _edit_meta(lambda m: m["config"].update(n_train=999))), ValueError,
     "n.npz", "n train 999", "20")
ckpt("checkpoints-param-shape",
     _load("p.npz", lambda a: a.update({"param/fc2.bias": np.zeros(11, np.float32)})),
     ValueError, "p.npz", "param/fc2.bias")
ckpt("checkpoints-extra-entry",
     _load("x.npz", lambda a: a.update({"param/fc3.weight": np.zeros(3, np.float32)})),
     ValueError, "x.npz", "param/fc3.weight")
ckpt("checkpoints-param-strings",
     _load("s.npz", lambda a: a.update({"param/fc2.bias": np.array(["z"] * 10)})),
     ValueError, "s.npz", "fc2.bias", "<U1")
ckpt("checkpoints-optim-state-dtype",
     _load("d.npz", lambda a: a.update({"optim/state.0.m": a["optim/state.0.m"].astype(float)})),
     ValueError, "d.npz", "state.0.m", "float64", "float32")
ckpt("checkpoints-optim-negative-lr",
     _load("lr.npz", lambda a: a.update({"optim/lr": np.array(-1.0)})), ValueError,
     "lr.npz", "'lr'", "-1.0")
ckpt("checkpoints-optim-negative-step",
     _load("st.npz", lambda a: a.update({"optim/step": np.array(-3)})), ValueError,
     "st.npz", "'step'")
ckpt("checkpoints-other-optimizer",
     lambda e: Trainer(e.net, e.trainer.x_train, e.trainer.t_train, e.trainer.x_test,
                       e.trainer.t_test, mini_batch_size=10, optimizer="sgd", verbose=False,
                       ).load_checkpoint(e.checkpoint),
     ValueError, "checkpoint.npz", "SGD", "another optimizer")
ckpt("checkpoints-save-onto-directory",
     lambda e: e.trainer.save_checkpoint(e.mkdir("ck")), ValueError,
     "ck", "directory")


# ============================================================================ cli
def _ckpt_path(e: Env) -> Path:
    return e.checkpoint.parent


def _bad_params(e: Env) -> None:
    (e.tmp / "bad.npz").write_bytes(npz_bytes(**net_arrays(e, **{"fc1.weight": np.zeros((2, 2))})))


def _evil_pickle(e: Env) -> None:
    (e.tmp / "evil.pkl").write_bytes(pickle.dumps({"W1": _Evil()}))


case("cli-unknown-command", cli("fit"), 2, "invalid choice", "'fit'")
case("cli-unknown-model", cli("graph", "--model", "resnet"), 2, "--model", "'resnet'")
case("cli-unknown-optimizer", cli("train", "--optimizer", "adamw"), 2, "--optimizer", "adamw")
case("cli-unknown-dataset", cli("train", "--dataset", "cifar"), 2, "--dataset", "'cifar'")
case("cli-epochs-zero", cli("train", "--epochs", "0"), 2, "--epochs", "0")
case("cli-epochs-not-a-number", cli("train", "--epochs", "ten"), 2, "--epochs", "ten")
case("cli-batch-size-negative", cli("train", "--batch-size", "-5"), 2, "--batch-size", "-5")
case("cli-limit-zero", cli("train", "--limit", "0"), 2, "--limit", "0")
case("cli-lr-negative", cli("train", "--lr", "-0.1"), 2, "--lr", "-0.1")
case("cli-lr-nan", cli("train", "--lr", "nan"), 2, "--lr", "nan")
case("cli-lr-inf", cli("train", "--lr", "inf"), 2, "--lr", "inf")
case("cli-init-inf", cli("train", "--init", "inf"), 2, "--init", "inf")
case("cli-init-zero", cli("train", "--init", "0"), 2, "--init", "0")
case("cli-init-unknown", cli("train", "--init", "lecun"), 2, "--init", "lecun")
case("cli-seed-float", cli("train", "--seed", "1.5"), 2, "--seed", "1.5")
case("cli-seed-negative",
     cli("train", "--seed", "-1", "--epochs", "1", "--limit", "10", "--quiet", "--out",
         lambda e: e.tmp / "run"), 2, "--seed", "-1", state=("files",))
case("cli-data-dir-without-mnist",
     cli("train", "--data-dir", lambda e: e.tmp, "--epochs", "1", "--limit", "10", "--quiet",
         "--out", lambda e: e.tmp / "run"), 2, "--data-dir", "--dataset mnist",
     state=("files",))
case("cli-out-empty", cli("train", "--out", "", "--epochs", "1", "--limit", "10", "--quiet"),
     2, "--out", "empty", state=("files",))
case("cli-params-empty", cli("graph", "--params", " "), 2, "--params", "empty")
case("cli-out-is-a-file", cli("train", "--out", lambda e: e.params_file), 2,
     "--out", "params.npz", prep=_saved, state=("files",))
case("cli-resume-without-checkpoint", cli("train", "--resume", "--out", lambda e: e.tmp),
     2, "--resume", "checkpoint.npz", state=("files",))
case("cli-resume-with-init", cli("train", "--resume", "--init", "he", "--out", _ckpt_path),
     2, "--init", "--resume", prep=_ckpt_prep, state=("files",))
case("cli-resume-other-batch-size",
     cli("train", "--resume", "--batch-size", "50", "--out", _ckpt_path), 2,
     "--batch-size 50", "--batch-size 10", prep=_ckpt_prep, state=("files",))
case("cli-resume-other-optimizer",
     cli("train", "--resume", "--optimizer", "sgd", "--out", _ckpt_path), 2,
     "--optimizer sgd", "--optimizer adam", prep=_ckpt_prep, state=("files",))
case("cli-resume-damaged-checkpoint", cli("train", "--resume", "--out", lambda e: e.tmp),
     2, "checkpoint.npz", prep=lambda e: (e.tmp / "checkpoint.npz").write_bytes(b"junk"),
     state=("files",))
case("cli-evaluate-missing-params", cli("evaluate", "--params", lambda e: e.tmp / "no.npz"),
     2, "--params", "no.npz")
case("cli-evaluate-params-required", cli("evaluate"), 2, "--params")
case("cli-evaluate-params-directory", cli("evaluate", "--params", lambda e: e.tmp), 2,
     "--params", "directory")
case("cli-graph-params-wrong-shape", cli("graph", "--params", lambda e: e.tmp / "bad.npz"),
     2, "bad.npz", "fc1.weight", "(2, 2)", prep=_bad_params, state=("files",))
case("cli-audit-params-pickle-code", cli("audit", "--params", lambda e: e.tmp / "evil.pkl"),
     2, "evil.pkl", "refusing", prep=_evil_pickle, state=("files",))
case("cli-graph-out-unknown-format",
     cli("graph", "--out", lambda e: e.tmp / "g.docx"), 2, "g.docx", state=("files",))


# fmt: on
# ---------------------------------------------------------------------------- the tests
def _params() -> list[Any]:
    return [pytest.param(c, id=c.id, marks=c.marks) for c in CATALOGUE]


@pytest.mark.parametrize("c", _params())
def test_bad_input(c: Case, tmp_path: Path) -> None:
    env = Env(tmp_path)
    if c.prep is not None:
        c.prep(env)
    before = snapshot(env, c.state)
    if isinstance(c.error, int):  # the CLI: an exit code and one line of error, no traceback
        code, err = c.act(env)
        assert code == c.error, f"exit code {code}, stderr: {err}"
        assert "Traceback" not in err, err
        lines = err.strip().splitlines()
        assert lines, "no error message"
        message = lines[-1]
        assert message.startswith("tinygrad-cnn") and "error:" in message, err
        assert sum("error" in line for line in lines) == 1, err  # usage lines, then one error
    else:
        with pytest.raises(BaseException) as info:
            c.act(env)
        assert type(info.value) is c.error, (
            f"expected {c.error.__name__}, got {type(info.value).__name__}: {info.value}"
        )
        message = str(info.value)
    for word in c.words:
        assert word in message, f"{word!r} not in the message: {message}"
    assert_same(before, snapshot(env, c.state))


def test_catalogue_size() -> None:
    counts = {area: sum(c.area == area for c in CATALOGUE) for area in AREAS}
    print("\n".join(f"{area:<12} {n:>3}" for area, n in counts.items()))
    assert sum(counts.values()) == len(CATALOGUE), "a case outside the five areas"
    assert len(CATALOGUE) >= MIN_TOTAL, counts
    assert min(counts.values()) >= MIN_PER_AREA, counts


def test_catalogue_ids_are_unique_and_readable() -> None:
    ids = [c.id for c in CATALOGUE]
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]
    for i in ids:
        assert i.replace("-", "").isalnum() and i.islower() and len(i) <= 48, i
