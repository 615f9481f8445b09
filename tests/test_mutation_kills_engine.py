"""Tests added while triaging mutmut's survivors in autograd.py and io.py's file handling.

See scripts/MUTATION.md: hook registration errors, handles removed twice, the base class's
messages and repr, the unbroadcast error, what kind of special file a refusal names, and
which stale temporary files are kept.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn import Function, Tensor, on_op_backward, on_op_created
from tinygrad_cnn.autograd import unbroadcast
from tinygrad_cnn.io import atomic_write, check_readable_file, remove_stale_temp_files

# --------------------------------------------------------------------------- hooks


@pytest.mark.parametrize("register", [on_op_created, on_op_backward], ids=["created", "backward"])
def test_hook_must_be_callable(register) -> None:
    kind = register.__name__
    with pytest.raises(TypeError, match=rf"^{kind}: hook must be callable, got int$"):
        register(3)


def test_a_handle_may_be_removed_twice() -> None:
    seen = []
    handle = on_op_created(lambda fn, xs, y: seen.append(fn.name))
    Tensor(np.ones(2)) * 2.0
    handle.remove()
    handle.remove()
    with handle:
        pass
    Tensor(np.ones(2)) * 2.0
    assert seen == ["Mul"]


class _Bare(Function, register=False):
    pass


def test_base_function_messages_name_the_subclass() -> None:
    with pytest.raises(NotImplementedError, match=r"^_Bare: define forward\(self, \*arrays\)$"):
        _Bare.apply(np.ones(2))
    with pytest.raises(NotImplementedError, match=r"^_Bare: define backward\(self, gy\)$"):
        _Bare().backward(np.ones(2))


def test_function_repr_lists_its_attributes() -> None:
    assert repr(Function.registry["Sum"](axis=(0, 1), keepdims=True)) == (
        "<Sum(axis=(0, 1), keepdims=True)>"
    )
    assert repr(Function.registry["Exp"]()) == "<Exp()>"


def test_unbroadcast_refuses_shapes_that_did_not_broadcast() -> None:
    with pytest.raises(ValueError, match=r"^cannot reduce a gradient of shape \(2, 3\) to shape "):
        unbroadcast(np.ones((2, 3)), (3, 2))
    np.testing.assert_array_equal(unbroadcast(np.ones((4, 2, 3)), (2, 1)), np.full((2, 1), 12))


# --------------------------------------------------------------------------- special files


def test_refusals_name_the_kind_of_special_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(ValueError, match=r"not a regular file \(it is a directory\)"):
        with atomic_write(tmp_path / "dir") as f:
            f.write(b"x")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match=r"fifo is a FIFO, not a regular IDX file$"):
        check_readable_file(tmp_path / "fifo", "IDX file")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        with pytest.raises(ValueError, match=r"sock is a socket, not a regular file$"):
            check_readable_file(tmp_path / "sock")
    if os.path.exists("/dev/null"):
        with pytest.raises(ValueError, match=r"^/dev/null is a character device, not a regular"):
            check_readable_file(Path("/dev/null"))
    blocks = [p for p in Path("/dev").glob("loop*") if p.is_block_device()]
    if blocks:
        with pytest.raises(ValueError, match=r"is a block device, not a regular file$"):
            check_readable_file(blocks[0])


def test_temp_files_of_live_writers_are_kept_and_the_writer_is_not_disturbed(tmp_path) -> None:
    target = tmp_path / "ck.npz"
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f".ck.npz.{writer.pid}.abcd1234.tmp"
        huge = tmp_path / f".ck.npz.{2**70}.abcd1234.tmp"  # no such PID can exist
        for p in (live, huge):
            p.write_bytes(b"partial")
        assert remove_stale_temp_files(target) == []
        time.sleep(0.05)
        assert writer.poll() is None, "the live writer was sent a signal"
        assert live.exists() and huge.exists()
    finally:
        writer.kill()
        writer.wait()
    assert remove_stale_temp_files(target) == [live]


# --------------------------------------------------------------------------- backward hooks


def test_backward_hooks_run_in_order_and_may_pass_or_replace() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    passes = on_op_backward(lambda fn, gy, gxs: None)
    doubles = on_op_backward(lambda fn, gy, gxs: [None if g is None else g * 2 for g in gxs])
    with passes, doubles:
        (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [12.0, 12.0])  # Sum's ones doubled, then Mul's 3


def test_a_backward_hook_may_return_a_bare_array_for_a_one_input_op() -> None:
    x = Tensor(np.array([0.0, 1.0]), requires_grad=True)
    with on_op_backward(lambda fn, gy, gxs: np.full(2, 7.0) if fn.name == "Exp" else None):
        x.exp().sum().backward()
    np.testing.assert_array_equal(x.grad, [7.0, 7.0])


class _CountedHook:
    def __call__(self, fn, gy, gxs):
        return (gxs[0],)


def test_a_backward_hook_returning_the_wrong_count_is_named() -> None:
    def short(fn, gy, gxs):
        return (gxs[0],) if len(gxs) == 2 else None

    a, b = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2), requires_grad=True)
    with on_op_backward(short):
        with pytest.raises(RuntimeError, match=(
            r"^on_op_backward hook test_a_backward_hook_returning_the_wrong_count_is_named"
            r"\.<locals>\.short returned 1 gradient\(s\) for Mul, which has 2 input\(s\); "
            r"return one per input or None$"
        )):  # fmt: skip
            (a * b).sum().backward()
    with on_op_backward(_CountedHook()):
        with pytest.raises(RuntimeError, match=r"^on_op_backward hook _CountedHook returned 1 "):
            (a * b).sum().backward()


# --------------------------------------------------------------------------- create_graph


class _Square(Function, register=False):
    """An op with a first-order backward only (no ``backward_graph``)."""

    def forward(self, x):
        self.save(x=x)
        return x * x

    def backward(self, gy):
        return 2 * self.saved["x"] * gy


def test_an_op_without_backward_graph_is_differentiable_once_under_create_graph() -> None:
    from tinygrad_cnn import grad

    x = Tensor(np.array([1.0, -3.0]), requires_grad=True)
    (g,) = grad(_Square.apply(x).sum() * 2.0, x, create_graph=True)
    assert isinstance(g, Tensor) and g.requires_grad
    np.testing.assert_array_equal(g.numpy(), [4.0, -12.0])
    with pytest.raises(RuntimeError, match=(
        r"^_Square can be differentiated once but not twice: it has no backward_graph\. "
        r"Define _Square\.backward_graph\(self, gy\) with Tensor ops \(see "
        r"Function\.backward_graph\) to use it with create_graph=True$"
    )):  # fmt: skip
        grad(g.sum(), x)
    # the upstream gradient is an input of the first-order gradient too: through it as well
    w = Tensor(np.array([0.5, 2.0]), requires_grad=True)
    (g,) = grad((_Square.apply(x) * w).sum(), x, create_graph=True)
    np.testing.assert_array_equal(g.numpy(), [1.0, -12.0])
    with pytest.raises(RuntimeError, match=r"^_Square can be differentiated once but not twice"):
        grad(g.sum(), w)


class _Scale(Function, register=False):
    """``a * b`` with a first-order backward only."""

    def forward(self, a, b):
        self.save(a=a, b=b)
        return a * b

    def backward(self, gy):
        need = self.needs_input_grad
        return (gy * self.saved["b"] if need[0] else None), (
            gy * self.saved["a"] if need[1] else None
        )


def test_first_order_only_gradients_keep_none_for_inputs_that_need_none() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    seen = []
    with on_op_backward(lambda fn, gy, gxs: seen.append(gxs) if fn.name == "_Scale" else None):
        (_Scale.apply(x, np.array([3.0, 4.0])).sum()).backward(create_graph=True)
    (gxs,) = seen
    assert gxs[1] is None and isinstance(gxs[0], Tensor)
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_user_ops_never_replace_builtins_but_the_package_may(monkeypatch) -> None:
    monkeypatch.setattr(Function, "registry", dict(Function.registry))
    builtin = Function.registry["Exp"]

    class Exp(Function):  # a user op named like a built-in one
        pass

    assert Function.registry["Exp"] is builtin
    assert Function.registry[f"{__name__}.{Exp.__qualname__}"] is Exp
    package_op = type("Exp", (Function,), {"__module__": "tinygrad_cnn.ops.elementwise"})
    assert Function.registry["Exp"] is package_op  # the package re-registering (a reload)


def test_create_graph_backward_accumulates_tensors_into_grad() -> None:
    x = Tensor(np.array([2.0]), requires_grad=True)
    (x * x * x).sum().backward(create_graph=True)
    first = x.grad
    assert isinstance(first, Tensor) and first.numpy().tolist() == [12.0]
    (x * x).sum().backward(create_graph=True)
    assert isinstance(x.grad, Tensor) and x.grad.numpy().tolist() == [16.0]


def test_stale_temp_file_rules(tmp_path) -> None:
    """Old PID-less files go; symlinks and unrelated files stay; a live PID's file goes after
    a day; the scan goes on past unrelated entries."""
    target = tmp_path / "ck.npz"
    for i in range(20):
        (tmp_path / f"other{i}").write_bytes(b"")
    old = tmp_path / ".ck.npz.abcd1234.tmp"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    aim = tmp_path / "aim"
    aim.write_bytes(b"keep me")
    link = tmp_path / ".ck.npz.efgh5678.tmp"
    link.symlink_to(aim)
    os.utime(link, (time.time() - 7200, time.time() - 7200), follow_symlinks=False)
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        day_old = tmp_path / f".ck.npz.{writer.pid}.ijkl9012.tmp"
        day_old.write_bytes(b"x")
        t = time.time() - 86400.5
        os.utime(day_old, (t, t))
        removed = remove_stale_temp_files(target, max_age=3600)
    finally:
        writer.kill()
        writer.wait()
    assert sorted(removed) == sorted([old, day_old])
    assert link.is_symlink() and aim.read_bytes() == b"keep me"
