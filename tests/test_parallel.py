"""tinygrad_cnn.parallel: the thread split must never change a result beyond rounding.

Every op that splits its work is run twice on the same inputs, inside ``threads(1)`` and
inside ``threads(2)`` with the size thresholds lowered so that even small arrays are split,
and the outputs and gradients are compared. The engine-level properties (gradcheck) are
checked under threads too. The split is on by default (no block needed), and the user's
BLAS thread count is left as they set it outside our GEMMs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_cnn import functional as F
from tinygrad_cnn import parallel
from tinygrad_cnn.nn import SimpleConvNet
from tinygrad_cnn.optim import get_optimizer
from tinygrad_cnn.tensor import Tensor
from tinygrad_cnn.testing import gradcheck
from tinygrad_cnn.train import Trainer


@pytest.fixture
def split_everything(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Thresholds so low that every op call in a test is split across threads."""
    monkeypatch.setattr(parallel, "MIN_WORK", 0)
    monkeypatch.setattr(parallel, "BLOCK", 7)  # odd, so blocks end mid-row
    yield


def two_threads() -> parallel.threads:
    ctx = parallel.threads(2)
    return ctx


def run_both(fn: Callable[[], list[np.ndarray]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``fn()`` on one thread, then inside ``threads(2)``; checks that two were used."""
    with parallel.threads(1):
        serial = [a.copy() for a in fn()]
    with parallel.threads(2) as n:
        if n != 2:
            pytest.skip("threadpoolctl found no BLAS library to pin to one thread")
        threaded = [a.copy() for a in fn()]
    return serial, threaded


def assert_all_close(a: list[np.ndarray], b: list[np.ndarray], rtol: float = 1e-12) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)


def fwd_bwd(op: Callable[..., Tensor], *arrays: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Output and every input gradient of ``op`` for a fixed random upstream gradient."""
    ts = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    y = op(*ts)
    u = np.random.default_rng(seed).standard_normal(y.shape).astype(y.data.dtype)
    (y * Tensor(u)).sum().backward()
    return [y.data, *(t.grad for t in ts)]


# ----------------------------------------------------------------------------- the pool
def test_bounds_cover_the_range_evenly() -> None:
    for n in range(0, 40):
        for parts in range(1, 6):
            b = parallel.bounds(n, parts)
            covered = [i for lo, hi in b for i in range(lo, hi)]
            assert covered == list(range(n))
            sizes = [hi - lo for lo, hi in b]
            assert not sizes or max(sizes) - min(sizes) <= 1


def test_run_returns_results_in_order(split_everything: None) -> None:
    with two_threads():
        assert parallel.run(lambda lo, hi: (lo, hi), 10, work=10) == [(0, 5), (5, 10)]
        assert parallel.run(lambda lo, hi: (lo, hi), 10, work=10, grain=6) == [(0, 10)]
    with parallel.threads(1):
        assert parallel.run(lambda lo, hi: (lo, hi), 10, work=10) == [(0, 10)]


def test_more_ranges_than_threads_are_all_taken_in_order(split_everything: None) -> None:
    with two_threads():
        got = parallel.run(lambda lo, hi: (lo, hi), 10, work=10, ranges=4)
    assert got == [(0, 2), (2, 5), (5, 7), (7, 10)]


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (2, 3, 0, 1), (1, 0, 3, 2)])
def test_copyto_between_layouts(split_everything: None, order: tuple[int, ...]) -> None:
    src = np.random.default_rng(8).standard_normal((5, 4, 3, 6))
    dst = np.empty([src.shape[d] for d in order]).transpose(np.argsort(order))
    with two_threads():
        parallel.copyto(dst, src)
    np.testing.assert_array_equal(dst, src)


def test_small_work_stays_on_one_thread() -> None:
    with two_threads():
        assert parallel.run(lambda lo, hi: hi - lo, 100, work=parallel.MIN_WORK - 1) == [100]


def test_an_error_on_a_worker_reaches_the_caller(split_everything: None) -> None:
    def fail_on_second_half(lo: int, hi: int) -> int:
        if lo > 0:
            raise ValueError(f"bad range {lo}:{hi}")
        return hi

    with two_threads():
        with pytest.raises(ValueError, match="bad range 5:10"):
            parallel.run(fail_on_second_half, 10, work=10)
        # the worker is free again afterwards
        assert parallel.run(lambda lo, hi: hi - lo, 10, work=10) == [5, 5]


def test_an_error_in_the_callers_range_still_waits_for_the_workers(split_everything) -> None:
    def fail_on_first_half(lo: int, hi: int) -> int:
        if lo == 0:
            raise KeyError("first half")
        return hi

    with two_threads():
        with pytest.raises(KeyError, match="first half"):
            parallel.run(fail_on_first_half, 10, work=10)
        assert parallel.run(lambda lo, hi: (lo, hi), 10, work=10) == [(0, 5), (5, 10)]


def test_a_result_nobody_collected_is_not_taken_for_the_next(split_everything) -> None:
    with two_threads() as n:
        if n != 2:
            pytest.skip("threadpoolctl found no BLAS library to pin to one thread")
        parallel._workers[0].submit(lambda: "stale")  # as if the caller was interrupted
        assert parallel.run(lambda lo, hi: (lo, hi), 10, work=10) == [(0, 5), (5, 10)]


def blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads() -> Iterator[None]:
    """The user's BLAS on two threads (as on a 2-core machine by default)."""
    from threadpoolctl import threadpool_limits

    if parallel._find_blas() is None:
        pytest.skip("threadpoolctl found no BLAS library")
    with threadpool_limits(2, user_api="blas"):
        yield


def test_the_ops_split_without_asking(split_everything, two_blas_threads) -> None:
    assert parallel.num_threads() == 2
    assert parallel.run(lambda lo, hi: (lo, hi), 10, work=10) == [(0, 5), (5, 10)]


def test_the_users_blas_count_decides_the_split(split_everything, two_blas_threads) -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # the user's one-thread setting holds for us
        assert parallel.num_threads() == 1
        assert parallel.run(lambda lo, hi: (lo, hi), 10, work=10) == [(0, 10)]


def test_a_gemm_pins_blas_to_one_thread_and_gives_it_back(two_blas_threads) -> None:
    seen = parallel.run(lambda lo, hi: blas_threads(), 1, work=1, gemm=True)
    assert set(seen[0]) == {1}
    assert set(blas_threads()) == {2}  # the user's count, back right after
    with pytest.raises(ZeroDivisionError):  # and back after an error too
        parallel.run(lambda lo, hi: 1 / 0, 1, work=1, gemm=True)
    assert set(blas_threads()) == {2} and parallel._pins == 0


def test_training_leaves_the_users_blas_threads_as_set() -> None:
    from threadpoolctl import threadpool_limits

    if parallel._find_blas() is None:
        pytest.skip("threadpoolctl found no BLAS library")
    before = blas_threads()
    with threadpool_limits(3, user_api="blas"):
        net = SimpleConvNet(seed=0)
        opt = get_optimizer("Adam", net.parameters(), lr=0.001)
        x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
        net.loss(x, np.arange(8) % 10).backward()
        opt.step()
        assert set(blas_threads()) == {3}
        a = np.ones((300, 300))
        assert (a @ a)[0, 0] == 300.0  # the user's own GEMM runs with their setting
        assert set(blas_threads()) == {3}
    assert blas_threads() == before


def test_while_the_pool_is_busy_another_thread_runs_whole(split_everything, two_blas_threads):
    import threading

    inside, release, seen = threading.Event(), threading.Event(), []

    def slow(lo: int, hi: int) -> tuple[int, int]:
        inside.set()
        release.wait(10)
        return lo, hi

    first = threading.Thread(target=lambda: seen.append(parallel.run(slow, 10, work=10)))
    first.start()
    assert inside.wait(10)
    other = parallel.run(lambda lo, hi: (lo, hi), 10, work=10)  # the pool is taken
    release.set()
    first.join(10)
    assert other == [(0, 10)] and seen == [[(0, 5), (5, 10)]]


def test_threads_is_per_thread_and_leaves_blas_alone(two_blas_threads) -> None:
    import threading

    with parallel.threads(1) as n:
        assert n == 1 and parallel.num_threads() == 1
        assert set(blas_threads()) == {2}
        other: list[int] = []
        t = threading.Thread(target=lambda: other.append(parallel.num_threads()))
        t.start()
        t.join()
        assert other == [2]  # another thread keeps the default
        with parallel.threads(3) as inner:  # nested: the outer setting holds
            assert inner == 1
    assert parallel.num_threads() == 2


def test_gemms_in_two_threads_at_once_restore_blas_exactly(two_blas_threads) -> None:
    import threading

    barrier, errors = threading.Barrier(2), []

    def user(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            a, b = rng.standard_normal((200, 64)), rng.standard_normal((64, 50))
            barrier.wait()
            for _ in range(200):
                np.testing.assert_allclose(parallel.matmul(a, b), a @ b, rtol=1e-12)
        except BaseException as e:  # reported below
            errors.append(e)

    users = [threading.Thread(target=user, args=(s,)) for s in (0, 1)]
    for u in users:
        u.start()
    for u in users:
        u.join(timeout=60)
    assert not any(u.is_alive() for u in users), "deadlock"
    assert not errors and parallel._pins == 0 and set(blas_threads()) == {2}


def test_a_run_inside_a_run_runs_whole(split_everything: None) -> None:
    with two_threads():
        got = parallel.run(lambda lo, hi: parallel.run(lambda a, b: (a, b), 4, 4), 4, 4)
    assert got in ([[(0, 4)], [(0, 4)]], [[(0, 4)]])


def test_a_forked_child_starts_on_one_thread(split_everything: None) -> None:
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    with two_threads():
        parallel.run(lambda lo, hi: hi, 10, work=10)  # the worker exists
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_relu_sum_in_threads).get(timeout=30) == 45.0


def _relu_sum_in_threads() -> float:
    parallel.MIN_WORK, parallel.BLOCK = 0, 7
    with parallel.threads(2):
        return float(F.relu(Tensor(np.arange(-5.0, 10.0))).data.sum())


def test_threads_1_holds_for_the_blocks_inside_it() -> None:
    with parallel.threads(1):
        with parallel.threads() as inner:  # as Trainer and accuracy enter it
            assert inner == 1 and parallel.num_threads() == 1


def test_threads_is_restored_after_an_error() -> None:
    default = parallel.num_threads()
    with pytest.raises(RuntimeError):
        with parallel.threads(default + 1):
            raise RuntimeError("boom")
    assert parallel.num_threads() == default


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_threads_rejects_a_bad_count(bad: object) -> None:
    with pytest.raises(ValueError, match="threads: n must be a positive int"):
        with parallel.threads(bad):  # type: ignore[arg-type]
            pass


def test_one_thread_or_no_threadpoolctl_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with parallel.threads(1) as n:
        assert n == 1 and parallel.num_threads() == 1
    monkeypatch.setattr(parallel, "_blas_controller", lambda: None)
    monkeypatch.setattr(parallel, "_blas_known", False)
    monkeypatch.setattr(parallel, "_blas", None)
    assert parallel.num_threads() == 1
    with parallel.threads(2) as n:
        assert n == 1 and parallel.num_threads() == 1
    monkeypatch.setattr(parallel, "MIN_WORK", 0)  # no split, and a gemm run touches no BLAS
    assert parallel.run(lambda lo, hi: (lo, hi), 10, work=10, gemm=True) == [(0, 10)]


def test_flat_needs_one_dense_memory_order() -> None:
    a = np.zeros((2, 3, 4)).transpose(2, 0, 1)  # dense, not C order
    b = np.zeros((2, 3, 4)).transpose(2, 0, 1)
    views = parallel.flat(a, b)
    assert views is not None and all(v.base is not None for v in views)
    views[0][:] = np.arange(24)
    assert a.transpose(1, 2, 0).reshape(-1).tolist() == list(range(24))
    assert parallel.flat(a, np.zeros((4, 2, 3))) is None  # other order
    assert parallel.flat(np.zeros((4, 6))[:, ::2]) is None  # not dense
    assert parallel.flat(a, np.zeros((4, 2))) is None  # other shape


# ----------------------------------------------------------------------------- the ops
shapes = st.tuples(
    st.integers(1, 4), st.integers(1, 3), st.integers(5, 11), st.integers(5, 11)
)  # (N, C, H, W)


@given(shape=shapes, oc=st.integers(1, 4), k=st.integers(1, 4), stride=st.integers(1, 2),
       pad=st.integers(0, 1), dtype=st.sampled_from([np.float32, np.float64]))  # fmt: skip
def test_conv2d_threads_match_one_thread(shape, oc, k, stride, pad, dtype) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((oc, shape[1], k, k)).astype(dtype)
    b = rng.standard_normal(oc).astype(dtype)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parallel, "MIN_WORK", 0)
        op = lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=pad)  # noqa: E731
        serial, threaded = run_both(lambda: fwd_bwd(op, x, w, b))
    assert_all_close(serial, threaded, 1e-5 if dtype == np.float32 else 1e-12)


@given(shape=shapes, k=st.integers(2, 3), stride=st.integers(1, 3),
       dtype=st.sampled_from([np.float32, np.float64]))  # fmt: skip
def test_max_pool2d_threads_match_one_thread(shape, k, stride, dtype) -> None:
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    x[..., 0, :2] = 0.5  # a tie in the first window row: the first element must win in both
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parallel, "MIN_WORK", 0)
        serial, threaded = run_both(lambda: fwd_bwd(lambda t: F.max_pool2d(t, k, stride), x))
    assert_all_close(serial, threaded, 0.0)  # no sums: bit-identical


@pytest.mark.parametrize("layout", ["nchw", "conv"])
def test_relu_threads_match_one_thread(split_everything: None, layout: str) -> None:
    a = np.random.default_rng(2).standard_normal((3, 4, 5, 6)).astype(np.float32)
    if layout == "conv":  # the (OH, OW, N, OC) memory Conv2d returns
        a = np.ascontiguousarray(a.transpose(2, 3, 0, 1)).transpose(2, 3, 0, 1)
    serial, threaded = run_both(lambda: fwd_bwd(F.relu, a))
    assert_all_close(serial, threaded, 0.0)


def test_linear_threads_match_one_thread(split_everything: None) -> None:
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((37, 150)), rng.standard_normal((150, 9)), rng.standard_normal(9)
    serial, threaded = run_both(lambda: fwd_bwd(F.linear, x, w, b))
    assert_all_close(serial, threaded)


def test_matmul_threads_match_one_thread(split_everything: None) -> None:
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((33, 20)), rng.standard_normal((20, 17))
    serial, threaded = run_both(lambda: fwd_bwd(F.matmul, a, b))
    assert_all_close(serial, threaded)
    batched = rng.standard_normal((2, 33, 20))  # batched products stay one call
    serial, threaded = run_both(lambda: fwd_bwd(F.matmul, batched, b))
    assert_all_close(serial, threaded)


def test_conv_pool_relu_linear_gradcheck_under_threads(split_everything: None) -> None:
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((2, 2, 8, 8)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    b = Tensor(rng.standard_normal(3), requires_grad=True)
    w2 = Tensor(rng.standard_normal((27, 4)), requires_grad=True)

    def net(x: Tensor, w: Tensor, b: Tensor, w2: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2)
        return F.linear(F.flatten(h), w2)

    with parallel.threads(2):
        assert gradcheck(net, x, w, b, w2)


@pytest.mark.parametrize("name", ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"])
def test_optimizer_threads_match_one_thread(split_everything: None, name: str) -> None:
    def steps() -> list[np.ndarray]:
        rng = np.random.default_rng(5)
        p = Tensor(rng.standard_normal((40, 30)), requires_grad=True)
        opt = get_optimizer(name, [p], lr=0.01, weight_decay=0.1)
        for _ in range(3):
            p.grad = rng.standard_normal(p.shape)
            opt.step()
        return [p.data]

    serial, threaded = run_both(steps)
    assert_all_close(serial, threaded, 0.0)  # elementwise: bit-identical


def test_trainer_under_threads_is_deterministic(split_everything: None) -> None:
    rng = np.random.default_rng(6)
    x = rng.random((40, 1, 12, 12), dtype=np.float32)
    t = rng.integers(0, 10, 40)

    def train(threads: int) -> list[np.ndarray]:
        net = SimpleConvNet((1, 12, 12), {"filter_num": 4, "filter_size": 3, "pad": 0,
                            "stride": 1}, hidden_size=8, seed=0)  # fmt: skip
        Trainer(net, x, t, x, t, epochs=2, mini_batch_size=16, seed=0, verbose=False,
                threads=threads).train()  # fmt: skip
        return [p.data for p in net.parameters()]

    first, again = train(2), train(2)
    assert_all_close(first, again, 0.0)
    assert_all_close(train(1), first, 1e-4)  # float32: rounding only


def test_elementwise_splits_arrays_of_different_memory_orders(split_everything, two_blas_threads):
    rng = np.random.default_rng(9)
    g = np.ascontiguousarray(rng.standard_normal((4, 5, 6, 3))).transpose(1, 2, 3, 0)
    m = rng.random((5, 6, 3, 4)) > 0.5  # C order: another layout than g's
    out = np.empty((5, 6, 3, 4))
    calls: list[tuple[int, ...]] = []

    def mul(g: np.ndarray, m: np.ndarray, out: np.ndarray) -> None:
        calls.append(out.shape)
        np.multiply(g, m, out=out)

    parallel.elementwise(mul, g, m, out)
    np.testing.assert_array_equal(out, g * m)
    assert len(calls) == 2 and sum(c[0] for c in calls) == 5  # halves of out's first axis
    calls.clear()
    parallel.elementwise(mul, g, m[:1], out)  # broadcasting: one call over everything
    np.testing.assert_array_equal(out, g * m[:1])
    assert calls == [(5, 6, 3, 4)]
