"""Tests added while triaging mutmut's survivors in autograd.py, backprop.py, optim.py and
io.py's file handling.

See scripts/MUTATION.md: hook registration errors, handles removed twice, the base class's
messages and repr, the unbroadcast error, what kind of special file a refusal names, which
stale temporary files are kept; the optimizers' messages, accepted parameters and
hyperparameters, and float32 arithmetic.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from oracles import live_writer

from tinygrad_cnn import Function, Tensor, grad, on_op_backward, on_op_created
from tinygrad_cnn.autograd import unbroadcast
from tinygrad_cnn.io import atomic_write, check_readable_file, remove_stale_temp_files
from tinygrad_cnn.optim import SGD, Adam, Momentum, Nesterov, Optimizer, RMSprop

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
    """The writer resets SIGHUP to its default (under nohup it inherits it ignored), so a
    SIGHUP sent to it would end it too."""
    target = tmp_path / "ck.npz"
    with live_writer() as writer:
        live = tmp_path / f".ck.npz.{writer.pid}.abcd1234.tmp"
        huge = tmp_path / f".ck.npz.{2**70}.abcd1234.tmp"  # no such PID can exist
        for p in (live, huge):
            p.write_bytes(b"partial")
        assert remove_stale_temp_files(target) == []
        with pytest.raises(subprocess.TimeoutExpired):  # still running: it was sent no signal
            writer.wait(0.2)
        assert live.exists() and huge.exists()
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


# --------------------------------------------------------------------------- optimizers


class _Param:
    """A bare parameter: ``.data``, ``.grad`` and ``.name``."""

    def __init__(self, data: np.ndarray, grad=None, name: str | None = "w") -> None:
        self.data, self.grad, self.name = data, grad, name


def test_optimizer_refuses_plain_arrays_with_a_type_error() -> None:
    # an ndarray has a .data (a memoryview) but no .name: still the clear TypeError
    with pytest.raises(TypeError, match=r"^parameter 0 needs a floating-point ndarray as \.data$"):
        SGD([np.zeros(3)])


def test_optimizer_step_messages_for_a_bad_grad() -> None:
    p = _Param(np.zeros(3))
    opt = SGD([p])
    p.grad = np.zeros(2)
    with pytest.raises(ValueError, match=(
        r"^parameter 0 \(w\): grad is \(2,\) float64, data is \(3,\) float64$"
    )):  # fmt: skip
        opt.step()
    p.grad = [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=(
        r"^parameter 0 \(w\): grad is list \(not an array\), data is \(3,\) float64$"
    )):  # fmt: skip
        opt.step()
    np.testing.assert_array_equal(p.data, np.zeros(3))


def test_optimizer_load_state_dict_names_the_type_it_got() -> None:
    with pytest.raises(TypeError, match=r"must be a dict \(or NpzFile\), got list$"):
        SGD([_Param(np.zeros(3))]).load_state_dict([("step", 0)])


UNIT_INTERVAL = [(Momentum, "momentum"), (Nesterov, "momentum"), (RMSprop, "decay_rate"),
                 (Adam, "beta1"), (Adam, "beta2")]  # fmt: skip


@pytest.mark.parametrize(("cls", "name"), UNIT_INTERVAL)
def test_optimizer_unit_interval_hyperparameters_exclude_one(cls, name) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be in \[0, 1\), got 1\.0$"):
        cls([_Param(np.zeros(3))], **{name: 1.0})


@pytest.mark.parametrize(("cls", "name"), UNIT_INTERVAL)
def test_optimizer_unit_interval_hyperparameters_include_zero(cls, name) -> None:
    assert getattr(cls([_Param(np.zeros(3))], **{name: 0.0}), name) == 0.0


@pytest.mark.parametrize("name", ["lr", "weight_decay"])
def test_optimizer_rate_messages_name_the_hyperparameter(name) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be finite and >= 0, got -1\.0$"):
        SGD([_Param(np.zeros(3))], **{name: -1.0})


def test_optimizer_refuses_a_one_element_tensor_as_hyperparameter() -> None:
    lr = Tensor(np.array([0.1]))  # float(lr) works, but it is not a scalar
    with pytest.raises(TypeError, match=r"^lr must be a real number, got "):
        SGD([_Param(np.zeros(3))], lr=lr)


class _PlainSGD(Optimizer):
    """A user optimizer that leaves ``weight_decay`` to the base class's default."""

    def __init__(self, params, lr: float = 0.5) -> None:
        super().__init__(params, lr)

    def _update(self, w, g, st, tmp, t):
        np.multiply(g, self.lr, out=tmp)
        w -= tmp


def test_optimizer_base_class_defaults_to_no_weight_decay() -> None:
    p = _Param(np.array([1.0, -2.0]), grad=np.array([1.0, 1.0]))
    opt = _PlainSGD([p])
    assert opt.weight_decay == 0.0
    opt.step()
    np.testing.assert_array_equal(p.data, [0.5, -2.5])


def test_optimizer_parameter_list_errors() -> None:
    with pytest.raises(TypeError, match=(
        r"^params must be an iterable of parameters, e\.g\. \[p\], not a parameter$"
    )):  # fmt: skip
        SGD(_Param(np.zeros(3), grad=np.zeros(3)))
    with pytest.raises(ValueError, match=r"^SGD got an empty parameter list$"):
        SGD([])
    with pytest.raises(TypeError, match=r"^parameter 0 needs a floating-point ndarray as \.data$"):
        SGD([object()])
    with pytest.raises(TypeError, match=r"^parameter 1 \(fc\.b\) needs a floating-point "):
        SGD([_Param(np.zeros(3)), _Param(np.zeros(3, np.int64), name="fc.b")])


class _Group(list):
    """An iterable of parameters that happens to carry a ``.data`` (but no ``.grad``)."""

    data = "group metadata"


def test_optimizer_accepts_any_iterable_and_empty_parameters_sharing_an_address() -> None:
    base = np.zeros(4)
    a, b = _Param(base[:0], name="a"), _Param(base[:0], name="b")  # empty: nothing to share
    opt = SGD(_Group([a, b, _Param(np.zeros(2))]))
    assert len(opt.params) == 3
    with pytest.raises(ValueError, match=r"^parameter 1 \(b\) duplicates parameter 0 \(a\)$"):
        SGD([_Param(base[:2], name="a"), _Param(base[:2], name="b")])


def test_optimizer_steps_on_a_create_graph_tensor_grad() -> None:
    w = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    (w * w).sum().backward(create_graph=True)
    assert isinstance(w.grad, Tensor)
    SGD([w], lr=0.25).step()
    np.testing.assert_array_equal(w.numpy(), [0.5, -1.0])


def _sgd_in(ct, w, g, lr, wd):
    """One SGD step written from the docs: ``w - lr * (g + wd * w)`` evaluated in the compute
    dtype ``ct`` (NumPy's rounding at each operation), rounded back to ``w``'s dtype once."""
    wc, gc = w.astype(ct), g.astype(ct)
    if wd:
        gc = wc * wd + gc
    return (wc - gc * lr).astype(w.dtype)


def _adam_in(ct, w, g, lr, wd, b1, b2, eps, m, v, t):
    """One Adam step as its docstring writes it (``p -= (lr * sqrt(c2) / c1) * m /
    (sqrt(v) + eps * sqrt(c2))``), evaluated in ``ct`` and rounded back once."""
    wc, gc = w.astype(ct), g.astype(ct)
    if wd:
        gc = wc * wd + gc
    m = m * b1 + gc * (1.0 - b1)
    v = v * b2 + gc * gc * (1.0 - b2)
    root_c2 = math.sqrt(1.0 - b2**t)
    wc = wc - m / (np.sqrt(v) + eps * root_c2) * (lr * root_c2 / (1.0 - b1**t))
    return wc.astype(w.dtype), m, v


@pytest.mark.parametrize("wd", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_optimizer_updates_in_float32_arithmetic_and_rounds_back_once(dtype, wd) -> None:
    """float32 parameters are updated in float32 and float16 ones in float32 then rounded
    (module docs): bit for bit what NumPy's float32 arithmetic gives, not float64's."""
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(4096).astype(dtype)
    grads = [rng.standard_normal(4096).astype(dtype) for _ in range(3)]
    # crafted for the first lr: 1 + lr is a float16 midpoint in float32 (ties to 1.0) but past
    # it in float64, and for float32 parameters 1 + float32(lr) is a float32 midpoint;
    # for lr = 0.3: 0.9375 - 0.3 * 3.125 is 0 in float64 but -6e-8 with float32's 0.3
    w0[:4], grads[0][:4] = [1.0, 1.0, 0.9375, -0.9375], [-1.0, -1.0, 3.125, -3.125]
    tiny = 2.0**-11 + 2.0**-30 if dtype == np.float16 else 2.0**-24 + 2.0**-50
    sgds = {lr: _Param(w0.copy()) for lr in (tiny, 0.3)}
    q = _Param(w0.copy())
    opts = [SGD([p], lr=lr, weight_decay=wd) for lr, p in sgds.items()]
    opts.append(Adam([q], lr=0.01, weight_decay=wd))
    want = {lr: w0.copy() for lr in sgds}
    want_q, m, v = w0.copy(), np.zeros(w0.shape, np.float32), np.zeros(w0.shape, np.float32)
    for t, g in enumerate(grads, 1):
        for p in (*sgds.values(), q):
            p.grad = g.copy()
        for opt in opts:
            opt.step()
        want_q, m, v = _adam_in(np.float32, want_q, g, 0.01, wd, 0.9, 0.999, 1e-8, m, v, t)
        np.testing.assert_array_equal(q.data, want_q)
        for lr, p in sgds.items():
            want[lr] = _sgd_in(np.float32, want[lr], g, lr, wd)
            np.testing.assert_array_equal(p.data, want[lr])
            assert p.data.dtype == dtype


# --------------------------------------------------------------------------- in-place writes


@pytest.mark.parametrize("create_graph", [False, True])
def test_an_unnamed_input_changed_in_place_is_reported_in_full(create_graph) -> None:
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    y = (a * b).sum()
    b.data[...] = 0.0
    with pytest.raises(RuntimeError, match=(
        r"^backward: input 1 of Mul \(tensor, shape \(2,\)\) was changed in place after Mul "
        r"saved it for backward \(version 0 -> 1\), so its gradient would be wrong\. Change it "
        r"after backward\(\), or compute on a copy$"
    )):  # fmt: skip
        y.backward(create_graph=create_graph)


# --------------------------------------------------------------------------- grad()


def test_grad_returns_arrays_and_frees_the_graph_by_default() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    (g,) = grad(y, x)
    assert type(g) is np.ndarray
    np.testing.assert_array_equal(g, [2.0, 4.0])
    with pytest.raises(RuntimeError, match=r"^grad: the graph was already freed"):
        grad(y, x)


def test_grad_argument_messages() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(TypeError, match=r"^grad: outputs\[0\] must be a Tensor, got ndarray$"):
        grad([np.ones(2)], x)
    with pytest.raises(TypeError, match=r"^grad: inputs\[1\] must be a Tensor, got ndarray$"):
        grad((x * x).sum(), [x, np.ones(2)])
    no_grad = Tensor(np.ones(3))
    with pytest.raises(RuntimeError, match=r"^grad: input 0 \(shape \(3,\)\) does not require"):
        grad((x * x).sum(), no_grad)
    with pytest.raises(RuntimeError, match=(
        r"^grad: grad_outputs can be omitted only for a scalar output, got shape \(2,\); "
        r"pass grad_outputs with that shape$"
    )):  # fmt: skip
        grad(x * x, x)


def test_grad_outputs_none_means_ones_for_every_output_and_one_array_is_for_one_output() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (g,) = grad(((x * x).sum(), (x * 3.0).sum()), x)
    np.testing.assert_array_equal(g, [5.0, 7.0])
    with pytest.raises(ValueError, match=r"^grad: got 1 grad_outputs for 2 outputs$"):
        grad((x * x, x * 3.0), x, grad_outputs=np.ones(2))


def test_grad_refuses_an_unused_input_before_freeing_the_graph() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    unused = Tensor(np.ones(3), requires_grad=True)
    y = (x * x).sum()
    with pytest.raises(RuntimeError, match=(
        r"^grad: input 1 \(shape \(3,\)\) was not used to compute the outputs; "
        r"pass allow_unused=True to get None for it$"
    )):  # fmt: skip
        grad(y, [x, unused])
    g, none = grad(y, [x, unused], allow_unused=True)  # the graph is still there
    np.testing.assert_array_equal(g, [2.0, 4.0])
    assert none is None


def test_grad_names_an_op_whose_graph_an_earlier_backward_freed() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    z = x * x
    z.sum().backward()  # frees Mul
    with pytest.raises(RuntimeError, match=(
        r"^grad: the graph through Mul was already freed by an earlier backward\(\) or grad\(\); "
        r"pass retain_graph=True to the first call$"
    )):  # fmt: skip
        grad((z * 2.0).sum(), x)


class _NoGradient(Function, register=False):
    """Identity whose backward gives no gradient to its input."""

    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        return None


def test_grad_refuses_an_input_whose_gradient_came_back_none() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(RuntimeError, match=(
        r"^grad: input 0 \(shape \(2,\)\) was not used to compute the outputs; "
        r"pass allow_unused=True to get None for it$"
    )):  # fmt: skip
        grad(_NoGradient.apply(x).sum(), x)
    assert grad(_NoGradient.apply(x).sum(), x, allow_unused=True) == (None,)


@pytest.mark.parametrize("create_graph", [False, True])
def test_grad_retain_graph_overrides_create_graph(create_graph) -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    grad(y, x, retain_graph=True, create_graph=create_graph)
    (g,) = grad(y, x, retain_graph=False, create_graph=create_graph)
    np.testing.assert_array_equal(np.asarray(g.numpy() if create_graph else g), [2.0, 4.0])
    with pytest.raises(RuntimeError, match=r"^grad: the graph was already freed"):
        grad(y, x)


# --------------------------------------------------------------------------- create_graph path


def test_create_graph_backward_inside_a_module_keeps_the_module_scope() -> None:
    from tinygrad_cnn.autograd import module_scope

    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with module_scope("critic"):
        (g,) = grad((x * x).sum(), x, create_graph=True)
        with pytest.raises(ValueError, match=r"\(in module critic\)$"):
            g @ Tensor(np.ones(3))


class _BadGraph(Function, register=False):
    """``a * b`` whose ``backward_graph`` returns what the test asks for."""

    reply: str

    def forward(self, a, b):
        return a * b

    def backward(self, gy):
        return gy, gy

    def backward_graph(self, gy):
        if self.reply == "one":
            return gy
        if self.reply == "array for b":
            return gy, gy.numpy()
        if self.reply == "wrong shape":
            return gy.sum() * Tensor(np.ones(3)), None
        return gy.numpy(), None


def test_create_graph_names_a_wrong_backward_graph() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(RuntimeError, match=(
        r"^_BadGraph\.backward_graph returned 1 gradient\(s\) for 2 input"
    )):  # fmt: skip
        _BadGraph.apply(x, np.ones(2), reply="one").sum().backward(create_graph=True)
    with pytest.raises(RuntimeError, match=(
        r"^_BadGraph\.backward_graph returned a ndarray for input 0; "
        r"it must return Tensors computed with Tensor ops$"
    )):  # fmt: skip
        _BadGraph.apply(x, np.ones(2), reply="array").sum().backward(create_graph=True)


def test_create_graph_skips_inputs_that_need_no_gradient() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (g,) = grad((x * Tensor(np.array([3.0, 4.0]))).sum(), x, create_graph=True)
    np.testing.assert_array_equal(g.numpy(), [3.0, 4.0])
    # what an op returns for an input that needs no gradient is not looked at
    y = _BadGraph.apply(x, np.ones(2), reply="array for b").sum()
    (g,) = grad(y, x, create_graph=True)
    np.testing.assert_array_equal(g.numpy(), [1.0, 1.0])


# --------------------------------------------------------------------------- create_graph, part 2


def test_create_graph_names_a_backward_graph_gradient_of_the_wrong_shape() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = _BadGraph.apply(x, np.ones(2), reply="wrong shape").sum()
    with pytest.raises(RuntimeError, match=(
        r"^_BadGraph\.backward_graph returned a gradient of shape \(3,\) for input 0, "
        r"whose shape is \(2,\)$"
    )):  # fmt: skip
        grad(y, x, create_graph=True)


def test_create_graph_gradients_come_back_in_each_inputs_dtype() -> None:
    """A float32 input times a float64 one: Mul's backward_graph computes in float64, and the
    float32 input's gradient is cast back (as on the first-order path), graph and all."""
    x = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    w = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    gx, gw = grad((x * w).sum(), [x, w], create_graph=True)
    assert (gx.dtype, gw.dtype) == (np.float32, np.float64)
    np.testing.assert_array_equal(gx.numpy(), [3.0, 4.0])
    np.testing.assert_array_equal(gw.numpy(), [1.0, 2.0])
    (h,) = grad((gx * gx).sum(), w)  # through the cast: d(sum w^2)/dw = 2 w
    assert h.dtype == np.float64
    np.testing.assert_array_equal(h, [6.0, 8.0])
    (x * w).sum().backward(create_graph=True)
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float64


def test_first_order_gradients_come_back_in_each_inputs_dtype() -> None:
    x = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    w = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    gx, gw = grad((x * w).sum(), [x, w])
    assert (gx.dtype, gw.dtype) == (np.float32, np.float64)
    np.testing.assert_array_equal(gx, [3.0, 4.0])
    np.testing.assert_array_equal(gw, [1.0, 2.0])


# --------------------------------------------------------------------------- backward messages


def test_backward_without_a_graph_says_how_to_get_one() -> None:
    with pytest.raises(RuntimeError, match=(
        r"^backward: this tensor does not require grad and has no graph; create inputs with "
        r"requires_grad=True \(and not under no_grad\(\)\)$"
    )):  # fmt: skip
        Tensor(np.ones(2)).sum().backward()


def test_freed_graph_messages_name_the_call_that_needs_retain_graph() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=(
        r"^backward: the graph was already freed by an earlier backward\(\) or grad\(\); call "
        r"backward\(retain_graph=True\) the first time to go through it twice$"
    )):  # fmt: skip
        y.backward()
    y = (x * x).sum()
    grad(y, x)
    with pytest.raises(RuntimeError, match=(
        r"^grad: the graph was already freed by an earlier backward\(\) or grad\(\); call "
        r"grad\(\.\.\., retain_graph=True\) the first time to go through it twice$"
    )):  # fmt: skip
        grad(y, x)
    z = x * x
    z.sum().backward()  # frees Mul, which the next graph reaches
    with pytest.raises(RuntimeError, match=(
        r"^backward: the graph through Mul was already freed by an earlier backward\(\); "
        r"use retain_graph=True$"
    )):  # fmt: skip
        (z * 2.0).sum().backward()


# --------------------------------------------------------------------------- roots


def test_the_root_gradient_has_the_outputs_dtype() -> None:
    x = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    y = (x * x).sum()
    seen = []
    with on_op_backward(lambda fn, gy, gxs: seen.append((fn.name, gy.dtype))):
        gy, gx = grad(y, [y, x])
    assert gy.dtype == np.float32 and gy == 1.0
    y2 = (x * x).sum()
    (g2,) = grad(y2, y2, grad_outputs=np.array(2.0))  # a float64 array is cast
    assert g2.dtype == np.float32 and g2 == 2.0
    assert seen == [("Sum", np.float32), ("Mul", np.float32)]
    np.testing.assert_array_equal(gx, [2.0, 4.0])


def test_a_tensor_grad_outputs_keeps_its_graph_under_create_graph() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    v = Tensor(np.array([5.0, 7.0]), requires_grad=True)
    (g,) = grad(x * x, x, grad_outputs=v, create_graph=True)  # 2 x v
    np.testing.assert_array_equal(g.numpy(), [10.0, 28.0])
    (gv,) = grad(g.sum(), v)  # through grad_outputs: 2 x
    np.testing.assert_array_equal(gv, [2.0, 4.0])


def test_an_output_given_twice_counts_twice() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    z = (x * 3.0).sum()
    (g,) = grad((y, y, z), x, retain_graph=True)
    np.testing.assert_array_equal(g, [7.0, 11.0])  # 2 * 2x + 3
    (g,) = grad((y, y, z), x, create_graph=True)
    np.testing.assert_array_equal(g.numpy(), [7.0, 11.0])
    y = (x * x).sum()
    (g,) = grad((y, (y * 1.0).sum(), y), x)  # each op walked once: the graph is freed after
    np.testing.assert_array_equal(g, [6.0, 12.0])


# --------------------------------------------------------------------------- grad mode and errors


def test_grad_mode_is_reported_as_a_bool() -> None:
    from tinygrad_cnn import enable_grad, is_grad_enabled, no_grad

    assert is_grad_enabled() is True
    with no_grad():
        assert is_grad_enabled() is False
        with enable_grad():
            assert is_grad_enabled() is True
        assert is_grad_enabled() is False
    assert is_grad_enabled() is True


class _Raises(Function, register=False):
    """An op whose forward raises an error with two arguments."""

    def forward(self, x):
        raise ValueError("bad input", 7)


def test_an_error_in_a_module_keeps_all_its_arguments() -> None:
    from tinygrad_cnn.autograd import module_scope

    with module_scope("net"), module_scope("fc1"):
        with pytest.raises(ValueError) as info:
            _Raises.apply(Tensor(np.ones(2)))
    assert info.value.args == ("bad input (in module net.fc1)", 7)


class _OneForTwo(Function, register=False):
    """``a + b`` whose backward returns one gradient for its two inputs."""

    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return (gy,)


def test_a_backward_returning_the_wrong_count_is_reported_in_full() -> None:
    x = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match=(
        r"^_OneForTwo\.backward returned 1 gradient\(s\) for 2 input\(s\); return one per input "
        r"\(None where needs_input_grad is False\)$"
    )):  # fmt: skip
        _OneForTwo.apply(x, x).sum().backward()


def test_a_plain_backward_adds_to_a_grad_left_by_create_graph() -> None:
    x = Tensor(np.array([2.0]), requires_grad=True)
    (x * x * x).sum().backward(create_graph=True)  # .grad: a Tensor, 3 x^2 = 12
    (x * x).sum().backward()  # + 2 x
    assert type(x.grad) is np.ndarray
    np.testing.assert_array_equal(x.grad, [16.0])


def test_backward_and_its_hooks_run_in_no_grad_mode_unless_create_graph() -> None:
    from tinygrad_cnn import is_grad_enabled

    for create_graph in (False, True):
        x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
        h = x * 3.0
        seen = []
        h.register_hook(lambda g, seen=seen: seen.append(is_grad_enabled()))
        with on_op_backward(lambda fn, gy, gxs, seen=seen: seen.append(is_grad_enabled())):
            (h * h).sum().backward(create_graph=create_graph)
        assert seen == [create_graph] * 4


def test_a_hooked_intermediate_gets_no_grad_without_retain_grad() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    h.register_hook(lambda g: None)
    (h * h).sum().backward()
    assert h.grad is None
    np.testing.assert_array_equal(x.grad, [18.0, 36.0])


class _Triple(Function, register=False):
    """``3 * x`` whose backward returns a Python float, or a list in a tuple."""

    as_list: bool

    def forward(self, x):
        return 3.0 * x

    def backward(self, gy):
        g = 3.0 * gy
        return (g.tolist(),) if self.as_list else float(g)


@pytest.mark.parametrize("as_list", [False, True])
def test_a_backward_may_return_python_numbers(as_list) -> None:
    data = np.array([1.0, 2.0] if as_list else 1.0, dtype=np.float32)
    x = Tensor(data, requires_grad=True)
    _Triple.apply(x, as_list=as_list).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, np.full(data.shape, 3.0))


def test_an_ops_freed_flag_is_false_until_backward_frees_it() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    assert y.op.freed is False
    y.backward(retain_graph=True)
    assert y.op.freed is False
    y.backward()
    assert y.op.freed is True


def test_backward_with_create_graph_keeps_the_graph_by_default() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(create_graph=True)
    assert y.op.freed is False
    y.backward()  # the graph is still there; .grad: 2x + 2x
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])


def test_backward_with_create_graph_takes_a_tensor_grad_with_its_graph() -> None:
    x = Tensor(np.array([1.0, -3.0]), requires_grad=True)
    v = Tensor(np.array([5.0, 7.0]), requires_grad=True)
    (x * x).backward(v, create_graph=True)  # .grad: 2 x v
    np.testing.assert_array_equal(x.grad.numpy(), [10.0, -42.0])
    (gv,) = grad(x.grad.sum(), v)
    np.testing.assert_array_equal(gv, [2.0, -6.0])
    x.grad = None
    _Square.apply(x).sum().backward(create_graph=True)  # an op without backward_graph
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, -6.0])


def test_backward_and_grad_name_a_bad_upstream_gradient() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(RuntimeError, match=(
        r"^backward: grad can be omitted only for a scalar output, got shape \(2,\); "
        r"pass grad with that shape$"
    )):  # fmt: skip
        (x * x).backward()
    for g, create_graph in [(np.ones(3), False), (np.ones(3), True), (Tensor(np.ones(3)), True)]:
        with pytest.raises(ValueError, match=r"^backward: grad has shape \(3,\), expected \(2,\)$"):
            (x * x).backward(g, create_graph=create_graph)
    with pytest.raises(TypeError, match=r"^backward: grad must be numeric, got dtype <U1$"):
        (x * x).backward(np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"^grad: grad_outputs has shape \(3,\), expected \(2,\)$"):
        grad(x * x, x, grad_outputs=np.ones(3))


def test_backward_with_create_graph_takes_an_array_grad() -> None:
    x = Tensor(np.array([1.0, -3.0]), requires_grad=True)
    (x * x).backward(np.array([5.0, 7.0]), create_graph=True)
    assert isinstance(x.grad, Tensor)
    np.testing.assert_array_equal(x.grad.numpy(), [10.0, -42.0])
    x.grad = None
    _Square.apply(x).backward(np.array([5.0, 7.0]), create_graph=True)  # no backward_graph
    np.testing.assert_array_equal(x.grad.numpy(), [10.0, -42.0])


def test_backward_takes_a_list_a_number_or_a_tensor_as_grad() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    for y, g, want in [
        (x * x, [5.0, 7.0], [10.0, 28.0]),
        ((x * x).sum(), 2.0, [4.0, 8.0]),
        (x * x, Tensor(np.array([5.0, 7.0])), [10.0, 28.0]),
    ]:
        x.grad = None
        y.backward(g)
        assert type(x.grad) is np.ndarray
        np.testing.assert_array_equal(x.grad, want)


def test_create_graph_makes_the_scalar_roots_ones_a_tensor() -> None:
    x = Tensor(np.array(3.0), requires_grad=True)
    y = _Square.apply(x)  # the root's own op has no backward_graph
    y.backward(create_graph=True)
    assert isinstance(x.grad, Tensor) and x.grad.numpy() == 6.0
    y = (x * x).sum()
    (gy,) = grad(y, y, create_graph=True)
    assert isinstance(gy, Tensor) and gy.numpy() == 1.0


def test_an_op_lists_the_attributes_it_was_applied_with() -> None:
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = x.sum(axis=1, keepdims=True)
    assert y.op.attrs() == {"axis": (1,), "keepdims": True}
    again = type(y.op).apply(x, **y.op.attrs())
    np.testing.assert_array_equal(again.numpy(), [[3.0], [3.0]])


def test_an_op_records_its_module_and_its_gradient_ops_join_it() -> None:
    from tinygrad_cnn.autograd import module_scope

    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with module_scope("net"), module_scope("fc1"):
        y = (x * x).sum()
    assert y.op.scope == ("net", "fc1")
    scopes = []
    with on_op_created(lambda fn, xs, out: scopes.append(fn.scope)):
        grad(y, x, create_graph=True)
    assert ("net", "fc1") in scopes  # the ops of the gradient of an op in net.fc1
