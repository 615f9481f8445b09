"""Tests for tinygrad_cnn.optim against independent textbook reference updates."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_cnn.optim import (
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    Optimizer,
    RMSprop,
    get_optimizer,
)


class P:
    """Minimal stand-in for a Tensor parameter."""

    def __init__(self, data: np.ndarray, grad: np.ndarray | None = None, name: str | None = None):
        self.data, self.grad, self.name = data, grad, name


SHAPES = [(3, 4), (5,), ()]
N_STEPS = 5


def initial(dtype=np.float64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def gradients(n: int = N_STEPS, dtype=np.float64) -> list[list[np.ndarray]]:
    """A different gradient per step, including some exact zeros and a sign flip."""
    rng = np.random.default_rng(1)
    out = []
    for k in range(n):
        gs = [rng.standard_normal(s) * (k + 1) for s in SHAPES]
        gs[0][0, 0] = 0.0
        out.append([g.astype(dtype) for g in gs])
    return out


def make_params(dtype=np.float64) -> list[P]:
    return [P(w, name=f"p{i}") for i, w in enumerate(initial(dtype))]


def set_grads(params: list[P], gs: list[np.ndarray]) -> None:
    for p, g in zip(params, gs, strict=True):
        p.grad = g.copy()


# --- textbook references: functional, float64, one parameter at a time ----------------


def ref_sgd(w, g, s, t, lr, weight_decay=0.0):
    g = g + weight_decay * w
    return w - lr * g


def ref_momentum(w, g, s, t, lr, momentum, weight_decay=0.0):
    g = g + weight_decay * w
    s["v"] = momentum * s.get("v", 0.0) - lr * g
    return w + s["v"]


def ref_nesterov(w, g, s, t, lr, momentum, weight_decay=0.0):
    g = g + weight_decay * w
    v = s.get("v", 0.0)  # previous velocity
    w = w + momentum * momentum * v - (1 + momentum) * lr * g
    s["v"] = momentum * v - lr * g
    return w


def ref_adagrad(w, g, s, t, lr, eps=1e-7, weight_decay=0.0):
    g = g + weight_decay * w
    s["h"] = s.get("h", 0.0) + g * g
    return w - lr * g / (np.sqrt(s["h"]) + eps)


def ref_rmsprop(w, g, s, t, lr, decay_rate=0.99, eps=1e-7, weight_decay=0.0):
    g = g + weight_decay * w
    s["h"] = decay_rate * s.get("h", 0.0) + (1 - decay_rate) * g * g
    return w - lr * g / (np.sqrt(s["h"]) + eps)


def ref_adam(w, g, s, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    g = g + weight_decay * w
    s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * g
    s["v"] = beta2 * s.get("v", 0.0) + (1 - beta2) * g**2
    m_hat = s["m"] / (1 - beta1**t)
    v_hat = s["v"] / (1 - beta2**t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps)


REFS = {
    "sgd": ref_sgd,
    "momentum": ref_momentum,
    "nesterov": ref_nesterov,
    "adagrad": ref_adagrad,
    "rmsprop": ref_rmsprop,
    "adam": ref_adam,
}
# Non-default hyperparameters, so a swapped or ignored argument shows up.
HYPER = {
    "sgd": {"lr": 0.1},
    "momentum": {"lr": 0.05, "momentum": 0.8},
    "nesterov": {"lr": 0.05, "momentum": 0.7},
    "adagrad": {"lr": 0.3, "eps": 1e-6},
    "rmsprop": {"lr": 0.02, "decay_rate": 0.9, "eps": 1e-6},
    "adam": {"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6},
}
CLASSES = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov}
CLASSES.update({"adagrad": AdaGrad, "rmsprop": RMSprop, "adam": Adam})
NAMES = list(REFS)


def run_reference(name: str, kwargs: dict, grads: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """Parameters (float64) after each step of the textbook update."""
    ws = [w.astype(np.float64) for w in initial()]
    states: list[dict] = [{} for _ in ws]
    history = []
    for t, gs in enumerate(grads, start=1):
        ws = [
            REFS[name](w, g.astype(np.float64), s, t, **kwargs)
            for w, g, s in zip(ws, gs, states, strict=True)
        ]
        history.append(ws)
    return history


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("name", NAMES)
def test_matches_textbook_formula(name: str, weight_decay: float) -> None:
    kwargs = {**HYPER[name], "weight_decay": weight_decay}
    grads = gradients()
    expected = run_reference(name, kwargs, grads)
    params = make_params()
    opt = CLASSES[name](params, **kwargs)
    for k, gs in enumerate(grads):
        set_grads(params, gs)
        opt.step()
        for p, want, g in zip(params, expected[k], gs, strict=True):
            np.testing.assert_allclose(p.data, want, rtol=1e-12, atol=1e-15)
            np.testing.assert_array_equal(p.grad, g)  # weight decay must not touch .grad
    assert opt.step_count == N_STEPS


@pytest.mark.parametrize("name", NAMES)
def test_default_hyperparameters_match_textbook(name: str) -> None:
    defaults = {
        "sgd": {"lr": 0.01},
        "momentum": {"lr": 0.01, "momentum": 0.9},
        "nesterov": {"lr": 0.01, "momentum": 0.9},
        "adagrad": {"lr": 0.01, "eps": 1e-7},
        "rmsprop": {"lr": 0.01, "decay_rate": 0.99, "eps": 1e-7},
        "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    }[name]
    opt = get_optimizer(name, make_params())
    assert {k: getattr(opt, k) for k in defaults} == defaults
    assert opt.weight_decay == 0.0
    grads = gradients(2)
    expected = run_reference(name, defaults, grads)[-1]
    for gs in grads:
        set_grads(opt.params, gs)
        opt.step()
    for p, want in zip(opt.params, expected, strict=True):
        np.testing.assert_allclose(p.data, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradient_from_fresh_state_is_a_no_op(name: str) -> None:
    params = make_params()
    before = [p.data.copy() for p in params]
    opt = get_optimizer(name, params, **HYPER[name])
    for _ in range(3):
        set_grads(params, [np.zeros(s) for s in SHAPES])
        opt.step()
    for p, w in zip(params, before, strict=True):
        np.testing.assert_array_equal(p.data, w)


def test_momentum_keeps_moving_on_zero_gradient_after_warmup() -> None:
    params = make_params()
    opt = Momentum(params, lr=0.1)
    set_grads(params, gradients(1)[0])
    opt.step()
    after_one = params[1].data.copy()
    set_grads(params, [np.zeros(s) for s in SHAPES])
    opt.step()
    assert not np.array_equal(params[1].data, after_one)


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name: str) -> None:
    kwargs = {**HYPER[name], "weight_decay": 0.01}
    grads = gradients(dtype=np.float32)
    expected = run_reference(name, kwargs, grads)[-1]
    params = make_params(np.float32)
    opt = get_optimizer(name, params, **kwargs)
    opt.lr = np.float64(kwargs["lr"])  # a float64 scalar set later must not upcast either
    for gs in grads:
        set_grads(params, gs)
        opt.step()
    for p, want in zip(params, expected, strict=True):
        assert p.data.dtype == np.float32
        np.testing.assert_allclose(p.data, want, rtol=2e-5, atol=2e-6)
    for state in opt.state:
        assert all(a.dtype == np.float32 for a in state.values())
    sd = opt.state_dict()
    assert all(v.dtype == np.float32 for v in sd.values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("name", NAMES)
def test_data_updated_in_place_and_state_preallocated(name: str) -> None:
    params = make_params()
    arrays = [p.data for p in params]
    opt = get_optimizer(name, params, **HYPER[name])
    set_grads(params, gradients(1)[0])
    opt.step()
    state_ids = [{k: id(a) for k, a in s.items()} for s in opt.state]
    before = [a.copy() for a in arrays]
    opt.step()
    assert all(p.data is a for p, a in zip(params, arrays, strict=True))
    assert not np.array_equal(arrays[0], before[0])
    assert [{k: id(a) for k, a in s.items()} for s in opt.state] == state_ids


@pytest.mark.parametrize("name", NAMES)
def test_params_without_grad_are_skipped(name: str) -> None:
    params = make_params()
    frozen = params[1].data.copy()
    opt = get_optimizer(name, params, **HYPER[name])
    gs = gradients(3)
    for k in range(2):
        set_grads(params, gs[k])
        params[1].grad = None
        opt.step()
    np.testing.assert_array_equal(params[1].data, frozen)
    assert opt.state[1] == {}
    assert opt.state_dict()["state.1.t"] == 0
    # Its first real update is a first update (Adam's bias correction uses t=1).
    params[1].grad = gs[2][1].copy()
    params[0].grad = params[2].grad = None
    opt.step()
    want = REFS[name](frozen, gs[2][1], {}, 1, **HYPER[name])
    np.testing.assert_allclose(params[1].data, want, rtol=1e-12, atol=1e-15)


def savez_roundtrip(d: dict) -> dict:
    buf = io.BytesIO()
    np.savez(buf, **d)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_roundtrip_is_bit_exact(name: str, dtype: type) -> None:
    kwargs = {**HYPER[name], "weight_decay": 0.01}
    grads = gradients(dtype=dtype)
    params = make_params(dtype)
    opt = get_optimizer(name, params, **kwargs)
    for gs in grads[:3]:
        set_grads(params, gs)
        opt.step()
    saved = savez_roundtrip(opt.state_dict())
    assert all(isinstance(k, str) for k in saved)
    twins = [P(p.data.copy(), name=p.name) for p in params]
    fresh = get_optimizer(name, twins)  # default hyperparameters: restored by the load
    fresh.load_state_dict(saved)
    for k in opt.hyperparams:
        assert type(getattr(fresh, k)) is float and getattr(fresh, k) == getattr(opt, k)
    assert fresh.step_count == 3
    for gs in grads[3:]:
        set_grads(params, gs)
        set_grads(twins, gs)
        opt.step()
        fresh.step()
    for p, q in zip(params, twins, strict=True):
        assert q.data.dtype == dtype
        np.testing.assert_array_equal(p.data, q.data)
    assert opt.state_dict().keys() == fresh.state_dict().keys()


def test_state_dict_format_and_snapshot_semantics() -> None:
    params = make_params()
    opt = Adam(params, weight_decay=0.1)
    set_grads(params, gradients(1)[0])
    opt.step()
    sd = opt.state_dict()
    expected_keys = {"step", "lr", "beta1", "beta2", "eps", "weight_decay"}
    expected_keys |= {f"state.{i}.{s}" for i in range(3) for s in ("t", "m", "v")}
    assert set(sd) == expected_keys
    assert sd["step"] == 1 and sd["state.0.t"] == 1 and sd["weight_decay"] == 0.1
    m0 = sd["state.0.m"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state.0.m"], m0)  # a copy, not a live view
    assert set(SGD(make_params()).state_dict()) == {"step", "lr", "weight_decay"} | {
        f"state.{i}.t" for i in range(3)
    }


def _saved_adam() -> dict:
    params = make_params()
    opt = Adam(params)
    set_grads(params, gradients(1)[0])
    opt.step()
    return opt.state_dict()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update({"state.0.m": np.zeros((4, 3))}), r"'state\.0\.m'.*p0"),
        (lambda d: d.update({"state.1.v": np.zeros(5, np.float32)}), r"'state\.1\.v'.*float32"),
        (lambda d: d.pop("state.2.v"), r"missing entry 'state\.2\.v'"),
        (lambda d: d.pop("beta2"), r"missing entry 'beta2'"),
        (lambda d: d.update({"momentum": 0.9}), r"unexpected entry 'momentum'"),
        (lambda d: d.update({"state.3.m": np.zeros(1)}), r"state for 4 parameters, expected 3"),
        (lambda d: d.update({"step": np.zeros(2, np.int64)}), r"'step'"),
        (lambda d: d.update({"state.0.t": 1.5}), r"'state\.0\.t'"),
        (lambda d: d.update({"beta1": 1.0}), r"'beta1'"),
        (lambda d: d.update({"lr": np.array([0.1])}), r"'lr'"),
    ],
)
def test_load_state_dict_rejects_mismatches_atomically(edit, match) -> None:
    d = _saved_adam()
    edit(d)
    target = Adam(make_params(), lr=0.123)
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(d)
    assert target.lr == 0.123 and target.step_count == 0  # nothing was applied
    assert all(int(t) == 0 for k, t in target.state_dict().items() if k.endswith(".t"))


def test_load_state_dict_rejects_wrong_parameter_count() -> None:
    with pytest.raises(ValueError, match="state for 3 parameters, expected 2"):
        Adam(make_params()[:2]).load_state_dict(_saved_adam())


def test_get_optimizer_names_and_kwargs() -> None:
    for name, cls in CLASSES.items():
        for spelling in (name, name.upper(), name.capitalize()):
            opt = get_optimizer(spelling, make_params())
            assert type(opt) is cls
    opt = get_optimizer("RMSprop", make_params(), lr=0.5, decay_rate=0.5)
    assert (opt.lr, opt.decay_rate) == (0.5, 0.5)
    with pytest.raises(ValueError, match="sgd, momentum, nesterov, adagrad, rmsprop, adam"):
        get_optimizer("adamw", make_params())
    with pytest.raises(TypeError, match="SGD.*momentum"):
        get_optimizer("sgd", make_params(), momentum=0.9)
    with pytest.raises(TypeError, match="Adam.*betas"):
        get_optimizer("adam", make_params(), betas=(0.9, 0.99))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="empty"):
        SGD([])
    with pytest.raises(ValueError, match="empty"):
        Adam(iter([]))
    p = P(np.zeros(3), name="w")
    with pytest.raises(ValueError, match=r"parameter 1 \(w\) duplicates parameter 0 \(w\)"):
        SGD([p, p])
    with pytest.raises(ValueError, match="duplicates"):
        SGD([p, P(p.data)])  # two parameters sharing one array
    with pytest.raises(TypeError, match="iterable of parameters"):
        SGD(p)
    with pytest.raises(TypeError, match="floating-point"):
        SGD([P(np.zeros(3, dtype=np.int64))])
    params = (x for x in make_params())  # a generator is materialised
    assert len(SGD(params).params) == 3
    for bad in ({"lr": -1.0}, {"weight_decay": -0.1}, {"beta1": 1.0}, {"beta2": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Adam(make_params(), **bad)
    with pytest.raises(ValueError, match="momentum"):
        Nesterov(make_params(), momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        RMSprop(make_params(), eps=0.0)
    assert isinstance(Adam(make_params()), Optimizer)
    assert repr(SGD(make_params(), lr=0.5)) == "SGD(lr=0.5, weight_decay=0.0, params=3)"


def test_grad_shape_or_dtype_mismatch_is_reported() -> None:
    p = P(np.zeros((2, 3)), name="fc.weight")
    opt = SGD([p])
    p.grad = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"fc\.weight"):
        opt.step()
    p.grad = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="float32"):
        opt.step()


def test_zero_grad() -> None:
    params = make_params()
    opt = SGD(params)
    set_grads(params, gradients(1)[0])
    grads = [p.grad for p in params]
    params[2].grad = None
    opt.zero_grad(set_to_none=False)
    assert params[0].grad is grads[0] and not params[0].grad.any()
    assert params[2].grad is None
    opt.zero_grad()
    assert all(p.grad is None for p in params)


@settings(max_examples=60, deadline=None)
@given(
    g=hnp.arrays(
        np.float32,
        hnp.array_shapes(max_dims=3, max_side=6),
        elements=st.floats(-1e4, 1e4, width=32),
    ),
    lr=st.floats(1e-4, 1.0),
)
def test_first_adam_step_is_bounded_by_lr(g: np.ndarray, lr: float) -> None:
    # From fresh state m_hat = g and v_hat = g*g, so |step| = lr*|g|/(|g|+eps) <= lr.
    p = P(np.zeros_like(g), grad=g)
    Adam([p], lr=lr).step()
    assert p.data.dtype == np.float32
    assert np.all(np.abs(p.data) <= np.float32(lr) * (1 + 1e-6))
    assert np.all(p.data * g <= 0)  # never along the gradient (may underflow to 0)
