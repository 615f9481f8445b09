"""Grad mode, module scope, anomaly mode and op hooks are per thread, as in PyTorch."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from tinygrad_cnn import (
    AnomalyError,
    Tensor,
    detect_anomaly,
    is_grad_enabled,
    no_grad,
    on_op_backward,
    on_op_created,
)
from tinygrad_cnn.models import SimpleConvNet
from tinygrad_cnn.optim import SGD

CONFIG = {"filter_num": 4, "filter_size": 3, "pad": 0, "stride": 1}


def in_threads(*bodies: Callable[[], object]) -> list[object]:
    """Run each body in its own thread; re-raise the first exception; return the results."""
    results: list[object] = [None] * len(bodies)
    errors: list[BaseException] = []

    def run(i: int, body: Callable[[], object]) -> None:
        try:
            results[i] = body()
        except BaseException as e:  # noqa: BLE001  (handed to the main thread)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def train(
    seed: int, steps: int, barrier: threading.Barrier | None = None, lag: bool = False
) -> list[np.ndarray]:
    """SGD steps on a tiny SimpleConvNet. With a barrier, two threads move in lockstep phases;
    the one that lags runs its forward while the other runs its backward."""

    def phase() -> None:
        if barrier is not None:
            barrier.wait()

    rng = np.random.default_rng(seed)
    x = rng.random((8, 1, 10, 10), dtype=np.float32)
    t = rng.integers(0, 5, 8)
    net = SimpleConvNet((1, 10, 10), CONFIG, hidden_size=6, output_size=5, seed=seed)
    opt = SGD(net.parameters(), lr=0.1)
    if lag:
        phase()
    for _ in range(steps):
        opt.zero_grad()
        loss = net.loss(x, t)
        assert loss.op is not None, "no graph was recorded"
        phase()
        loss.backward()
        assert all(p.grad is not None for p in net.parameters()), "a gradient was lost"
        opt.step()
        phase()
    if not lag:
        phase()
    return [p.numpy().copy() for p in net.parameters()]


def test_two_threads_training_two_networks_get_the_sequential_gradients():
    expected = [train(0, 40), train(1, 40)]
    barrier = threading.Barrier(2)
    got = in_threads(lambda: train(0, 40, barrier), lambda: train(1, 40, barrier, lag=True))
    for exp, res in zip(expected, got, strict=True):
        for e, r in zip(exp, res, strict=True):
            np.testing.assert_array_equal(r, e)


def step_pair() -> tuple[threading.Event, threading.Event]:
    return threading.Event(), threading.Event()


def test_no_grad_in_one_thread_never_affects_another():
    inside, done = step_pair()
    seen: dict[str, object] = {}

    def quiet() -> None:
        with no_grad():
            inside.set()
            done.wait(10)

    def loud() -> None:
        inside.wait(10)
        seen["enabled"] = is_grad_enabled()
        x = Tensor(np.ones(3), requires_grad=True)
        seen["recorded"] = (x * 2.0).op is not None
        done.set()

    in_threads(quiet, loud)
    assert seen == {"enabled": True, "recorded": True}
    assert is_grad_enabled()


def test_interleaved_no_grad_enter_and_exit_restore_each_thread():
    """A enters, B enters, A exits, B exits: both end with grad mode on (a global flag would
    leave the process in no-grad mode)."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    after: dict[str, bool] = {}
    ctx = no_grad()  # one object entered by both threads

    def a() -> None:
        with ctx:
            a_in.set()
            b_in.wait(10)
        after["a"] = is_grad_enabled()
        a_out.set()

    def b() -> None:
        a_in.wait(10)
        with ctx:
            b_in.set()
            a_out.wait(10)
            after["b inside"] = is_grad_enabled()
        after["b"] = is_grad_enabled()

    in_threads(a, b)
    assert after == {"a": True, "b inside": False, "b": True}


def test_backward_in_one_thread_does_not_stop_recording_in_another():
    """backward() turns recording off for itself; another thread's forward still records."""
    hold, resume = step_pair()
    recorded: list[bool] = []

    def slow_backward() -> None:
        x = Tensor(np.ones(3), requires_grad=True)
        y = x * 2.0
        y.register_hook(lambda g: (hold.set(), resume.wait(10)) and None)
        y.sum().backward()

    def forward() -> None:
        hold.wait(10)
        x = Tensor(np.ones(3), requires_grad=True)
        recorded.append((x * 3.0).op is not None)
        resume.set()

    in_threads(slow_backward, forward)
    assert recorded == [True]


def test_anomaly_mode_in_one_thread_never_raises_in_another():
    inside, done = step_pair()
    outcome: dict[str, object] = {}

    def watched() -> None:
        with detect_anomaly():
            inside.set()
            done.wait(10)

    def other() -> None:
        inside.wait(10)
        with np.errstate(all="ignore"):
            y = Tensor(np.array([-1.0]), requires_grad=True).log()  # nan, but not watched here
        outcome["nan"] = bool(np.isnan(y.numpy()[0]))
        done.set()

    in_threads(watched, other)
    assert outcome == {"nan": True}
    with pytest.raises(AnomalyError), np.errstate(all="ignore"), detect_anomaly():
        Tensor(np.array([-1.0]), requires_grad=True).log()


def test_op_hooks_are_per_thread():
    inside, done = step_pair()
    seen: list[str] = []

    def hooked() -> None:
        with (
            on_op_created(lambda fn, xs, y: seen.append("created")),
            on_op_backward(lambda fn, gy, gxs: seen.append("backward")),
        ):
            inside.set()
            done.wait(10)

    def other() -> None:
        inside.wait(10)
        (Tensor(np.ones(2), requires_grad=True) * 2.0).sum().backward()
        done.set()

    in_threads(hooked, other)
    assert seen == []


def test_module_scope_is_per_thread():
    """Ops recorded in one thread never carry the module path of a call in another."""
    inside, done = step_pair()
    scopes: list[tuple[str, ...]] = []
    net = SimpleConvNet((1, 10, 10), CONFIG, hidden_size=6, output_size=5, seed=0)
    original = net.conv1.forward

    def slow_conv(x: Tensor) -> Tensor:
        inside.set()
        done.wait(10)
        return original(x)

    net.conv1.forward = slow_conv  # type: ignore[method-assign]

    def in_module() -> None:
        net(np.zeros((1, 1, 10, 10), np.float32))

    def outside() -> None:
        inside.wait(10)
        y = Tensor(np.ones(2), requires_grad=True) * 2.0
        scopes.append(y.op.scope)
        done.set()

    in_threads(in_module, outside)
    assert scopes == [()]
