"""Whole training steps of DeepConvNet against PyTorch: forward with dropout, backward through
every layer and Adam's update, five steps in float64, read from
``tests/data/reference_train.{json,npz}`` (made by ``tests/data/make_reference_train.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinygrad_cnn.models import DeepConvNet
from tinygrad_cnn.optim import Adam

DATA = Path(__file__).resolve().parent / "data"
META = json.loads((DATA / "reference_train.json").read_text())
with np.load(DATA / "reference_train.npz", allow_pickle=False) as _npz:
    REF = dict(_npz)
NAMES = [k.removeprefix("init.") for k in REF if k.startswith("init.")]


class FixedDraws:
    """Stands in for a Dropout's generator: ``random`` gives 1 where ``keep``, else 0, so
    ``Dropout`` (which keeps where ``random(shape) >= p``) keeps exactly those units."""

    def __init__(self, keep: np.ndarray) -> None:
        self.keep = keep

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        assert shape == self.keep.shape, (shape, self.keep.shape)
        return self.keep.astype(np.float64)


def train(dtype: Any, ref: dict[str, np.ndarray] = REF, **adam: float) -> dict[str, Any]:
    """The oracle's run with our DeepConvNet and Adam in ``dtype``, in the plain user loop.

    Returns each step's ``logits`` (S, N, 10) and ``loss`` (S,), the step-1 gradients
    ``grad1`` and the ``final`` parameters, by our parameter names.
    """
    net = DeepConvNet(seed=1, dtype=dtype)  # another seed: the loaded weights must count
    net.load_state_dict({name: ref[f"init.{name}"] for name in NAMES})
    settings = {"lr": META["lr"], "beta1": META["betas"][0], "beta2": META["betas"][1],
                "eps": META["eps"], **adam}  # fmt: skip
    opt = Adam(net.parameters(), **settings)
    params = dict(net.named_parameters())
    logits, losses, grad1 = [], [], {}
    net.register_forward_hook(lambda m, xs, y: logits.append(y.numpy().astype(np.float64)))
    for s in range(META["steps"]):
        net.dropout1.rng = FixedDraws(ref["keep1"][s])
        net.dropout2.rng = FixedDraws(ref["keep2"][s])
        opt.zero_grad()
        loss = net.loss(ref["x"][s].astype(dtype), ref["t"][s])
        loss.backward()
        if s == 0:
            grad1 = {name: p.grad.astype(np.float64) for name, p in params.items()}
        losses.append(loss.item())
        opt.step()
    final = {name: p.numpy().astype(np.float64) for name, p in params.items()}
    return {"logits": np.stack(logits), "loss": np.array(losses), "grad1": grad1, "final": final}


#: Measured float64 differences from PyTorch 2.14 (both on this machine's BLAS): logits 4.2e-15,
#: losses 8.9e-16 (3.6e-16 relative), step-1 gradients 4.4e-15 absolute (1.2e-10 relative only
#: where a gradient is below 1e-14), parameters after five steps 1.2e-14. The tolerances leave
#: a factor of 1000 or more for another BLAS's summation order, yet a wrong step is far outside
#: them: lr * (1 + 1e-6) moves the losses by 1.5e-7 and the parameters by 2.3e-7, eps 1.01e-8
#: the parameters by 6e-6, lr 1.1e-3 or eps 1e-6 the losses by 1.7e-2 and 1.5e-4. Adam divides
#: a gradient by its size, so an error d in a gradient g moves a parameter by up to
#: lr * eps / (|g| + eps)**2 * d a step: 1e5 * d for g near 0, but such tiny gradients also
#: have tiny rounding errors.
FLOAT64 = {
    "logits": {"rtol": 1e-10, "atol": 1e-12},
    "loss": {"rtol": 1e-12, "atol": 0},
    "grad1": {"rtol": 1e-9, "atol": 1e-12},
    "final": {"rtol": 0, "atol": 1e-10},
}
#: float32 against the float64 oracle (measured: logits 1.2e-6, losses 6.1e-8 relative, step-1
#: gradients 8.0e-7 absolute (fc2.weight, up to 2.4), parameters 2.0e-6, most of it in conv5,
#: conv6 and fc1, where Adam's division turns a small gradient's rounding into a step): the
#: float32 run takes the same path, off by rounding, not by a step (lr = 1e-3).
FLOAT32 = {
    "logits": {"rtol": 1e-4, "atol": 1e-5},
    "loss": {"rtol": 1e-5, "atol": 0},
    "grad1": {"rtol": 1e-4, "atol": 2e-6},
    "final": {"rtol": 0, "atol": 2e-5},
}


def check(run: dict[str, Any], kind: str, tol: dict[str, float]) -> None:
    """Assert that ``run[kind]`` matches the oracle's, naming the step or parameter."""
    if kind in ("logits", "loss"):
        for s, (ours, theirs) in enumerate(zip(run[kind], REF[kind], strict=True), start=1):
            np.testing.assert_allclose(ours, theirs, **tol, err_msg=f"{kind} at step {s}")
        return
    assert sorted(run[kind]) == sorted(NAMES)
    for name in NAMES:
        ours, theirs = run[kind][name], REF[f"{kind}.{name}"]
        np.testing.assert_allclose(ours, theirs, **tol, err_msg=f"{kind} of {name}")


@pytest.fixture(scope="module")
def run64() -> dict[str, Any]:
    return train(np.float64)


def test_the_oracle_is_what_its_json_says():
    S, N = META["steps"], META["batch"]
    assert REF["x"].shape == (S, N, 1, 28, 28) and REF["x"].dtype == np.float64
    assert 0 <= REF["x"].min() and REF["x"].max() <= 1
    assert REF["t"].shape == (S, N) and REF["loss"].shape == (S,)
    assert REF["keep1"].shape == (S, N, 50) and REF["keep2"].shape == (S, N, 10)
    assert 0 < REF["keep1"].mean() < 1 and 0 < REF["keep2"].mean() < 1
    assert len(NAMES) == 16 and META["dropout_ratio"] == DeepConvNet().dropout_ratio
    for name in NAMES:  # every layer learned: Adam's steps are about lr each (5.0e-3 here)
        moved = np.abs(REF[f"final.{name}"] - REF[f"init.{name}"]).max()
        assert S * META["lr"] / 2 < moved < 4 * S * META["lr"], name


def test_forward_with_dropout_matches_pytorch_every_step(run64):
    check(run64, "logits", FLOAT64["logits"])


def test_step1_gradients_match_pytorch_through_every_layer(run64):
    check(run64, "grad1", FLOAT64["grad1"])


def test_losses_match_pytorch_step_for_step(run64):
    check(run64, "loss", FLOAT64["loss"])


def test_parameters_after_five_adam_steps_match_pytorch(run64):
    check(run64, "final", FLOAT64["final"])


def test_float32_training_follows_the_float64_oracle():
    run = train(np.float32)
    for kind, tol in FLOAT32.items():
        check(run, kind, tol)


@pytest.mark.parametrize(
    "change",
    [{"lr": 1.1e-3}, {"lr": 1e-3 * (1 + 1e-6)}, {"eps": 1e-6}, {"beta2": 0.99}],
    ids=["lr-1.1e-3", "lr-off-by-1e-6", "eps-1e-6", "beta2-0.99"],
)
def test_another_adam_fails_the_checks(change):
    """The checks can fail: another Adam setting leaves the step-1 gradients as they are but
    changes every later forward pass, loss and the final parameters (lr off by one part in a
    million moves the losses by 1.5e-7 and the parameters by 2.3e-7)."""
    run = train(np.float64, **change)
    check(run, "grad1", FLOAT64["grad1"])
    for kind in ("logits", "loss", "final"):
        with pytest.raises(AssertionError):
            check(run, kind, FLOAT64[kind])


def test_other_dropout_masks_fail_every_check():
    reversed_steps = {**REF, "keep1": REF["keep1"][::-1], "keep2": REF["keep2"][::-1]}
    run = train(np.float64, ref=reversed_steps)
    for kind in FLOAT64:
        with pytest.raises(AssertionError):
            check(run, kind, FLOAT64[kind])
