"""Regenerate ``tests/data/reference_ops.{json,npz}``: PyTorch float64 forward results and
gradients for the ops of issue 12 (needs ``torch``; the tests only read the files).

    python tests/data/make_reference_ops.py [--seed 0]

Each case calls one ``tinygrad_cnn.functional`` wrapper: the json lists, per case, ``fn`` (its
name), ``kwargs`` (in tinygrad_cnn's spelling), ``inputs`` (argument names, in order) and
``grad`` (the float inputs differentiated). The npz holds ``NNN.<input>``, the upstream
gradients ``NNN.gy<i>`` (one per output; tuple outputs have several), the outputs ``NNN.y<i>``
and the gradients ``NNN.g.<input>`` of ``sum_i <y_i, gy_i>``, computed by PyTorch's autograd.
Both files are written through a temporary file and a rename.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as tf

OUT = Path(__file__).resolve().parent


def cases(rng: np.random.Generator) -> list[tuple[str, dict, dict, list[str], Callable]]:
    """(fn, kwargs, inputs by name, names to differentiate, the PyTorch call on those inputs)."""
    r = rng.standard_normal
    out: list = []

    def add(fn, kwargs, inputs, grad, torch_fn):
        out.append((fn, kwargs, inputs, grad, torch_fn))

    # shape ops
    add(
        "cat",
        {"axis": 1},
        {"a": r((2, 3)), "b": r((2, 1))},
        ["a", "b"],
        lambda a, b: torch.cat([a, b], 1),
    )
    add(
        "stack",
        {"axis": -1},
        {"a": r((2, 3)), "b": r((2, 3))},
        ["a", "b"],
        lambda a, b: torch.stack([a, b], -1),
    )
    add(
        "split",
        {"split_size_or_sections": 2, "axis": 0},
        {"x": r((5, 2))},
        ["x"],
        lambda x: torch.split(x, 2, 0),
    )
    add(
        "split",
        {"split_size_or_sections": [1, 3], "axis": 1},
        {"x": r((2, 4))},
        ["x"],
        lambda x: torch.split(x, [1, 3], 1),
    )
    add("chunk", {"chunks": 3, "axis": 1}, {"x": r((2, 7))}, ["x"], lambda x: torch.chunk(x, 3, 1))
    add("unsqueeze", {"axis": 1}, {"x": r((3, 2))}, ["x"], lambda x: x.unsqueeze(1))
    add("squeeze", {"axis": 0}, {"x": r((1, 3, 1))}, ["x"], lambda x: x.squeeze(0))
    add("squeeze", {}, {"x": r((1, 3, 1))}, ["x"], lambda x: x.squeeze())
    add(
        "broadcast_to",
        {"shape": [2, 3, 4]},
        {"x": r((3, 1))},
        ["x"],
        lambda x: torch.broadcast_to(x, (2, 3, 4)),
    )
    add("expand", {"sizes": [2, -1, 4]}, {"x": r((3, 1))}, ["x"], lambda x: x.expand(2, -1, 4))
    add(
        "pad",
        {"pad": [1, 2, 0, 1], "value": 0.5},
        {"x": r((2, 3, 4))},
        ["x"],
        lambda x: tf.pad(x, (1, 2, 0, 1), value=0.5),
    )
    add(
        "pad",
        {"pad": [2, 1, 1, 2], "mode": "reflect"},
        {"x": r((1, 2, 4, 5))},
        ["x"],
        lambda x: tf.pad(x, (2, 1, 1, 2), mode="reflect"),
    )
    add("flip", {"axis": [0, 2]}, {"x": r((2, 3, 4))}, ["x"], lambda x: torch.flip(x, (0, 2)))
    # elementwise
    away = np.where(rng.random((3, 4)) < 0.5, -1, 1) * rng.uniform(0.1, 2, (3, 4))
    for name, tfn in (("abs", torch.abs), ("sin", torch.sin), ("cos", torch.cos),
                      ("erf", torch.erf), ("square", torch.square)):  # fmt: skip
        add(name, {}, {"x": away}, ["x"], tfn)
    add("sqrt", {}, {"x": rng.uniform(0.1, 3, (3, 4))}, ["x"], torch.sqrt)
    add("log1p", {}, {"x": rng.uniform(-0.9, 3, (3, 4))}, ["x"], torch.log1p)
    add("clip", {"min": -0.5, "max": 0.7}, {"x": away}, ["x"], lambda x: torch.clamp(x, -0.5, 0.7))
    add("clip", {"max": 0.3}, {"x": away}, ["x"], lambda x: torch.clamp(x, max=0.3))
    add("where", {}, {"cond": rng.random((3, 1)) < 0.5, "a": r((3, 4)), "b": r((4,))},
        ["a", "b"], lambda c, a, b: torch.where(c, a, b))  # fmt: skip
    for name, tfn in (("minimum", torch.minimum), ("maximum", torch.maximum)):
        add(name, {}, {"a": r((2, 3)), "b": r((3,))}, ["a", "b"], tfn)
    add("pow", {}, {"base": np.float64(2.5), "x": r((3,))}, ["x"], lambda b, x: torch.pow(2.5, x))
    # activations
    add("leaky_relu", {"negative_slope": 0.2}, {"x": away}, ["x"], lambda x: tf.leaky_relu(x, 0.2))
    add("elu", {"alpha": 0.7}, {"x": away}, ["x"], lambda x: tf.elu(x, 0.7))
    add("gelu", {}, {"x": 3 * r((3, 4))}, ["x"], tf.gelu)
    add(
        "gelu",
        {"approximate": "tanh"},
        {"x": 3 * r((3, 4))},
        ["x"],
        lambda x: tf.gelu(x, approximate="tanh"),
    )
    add("softplus", {"beta": 2.0}, {"x": 3 * r((3, 4))}, ["x"], lambda x: tf.softplus(x, 2.0))
    # reductions
    add("min", {"axis": 1}, {"x": r((3, 4))}, ["x"], lambda x: torch.amin(x, 1))
    add("min", {}, {"x": r((3, 4))}, ["x"], torch.min)
    add("var", {"axis": 1}, {"x": r((3, 5))}, ["x"], lambda x: torch.var(x, 1))
    add(
        "var",
        {"correction": 0, "keepdims": True},
        {"x": r((3, 5))},
        ["x"],
        lambda x: torch.var(x, correction=0, keepdim=True),
    )
    add("std", {"axis": [0, 2]}, {"x": r((2, 3, 4))}, ["x"], lambda x: torch.std(x, (0, 2)))
    add("logsumexp", {"axis": 1}, {"x": 50 * r((3, 4))}, ["x"], lambda x: torch.logsumexp(x, 1))
    for p in (2, 1, float("inf"), 3.0):
        add(
            "norm",
            {"p": p, "axis": 1},
            {"x": away},
            ["x"],
            lambda x, p=p: torch.linalg.vector_norm(x, p, 1),
        )
    add("argmax", {"axis": 1}, {"x": r((3, 4))}, [], lambda x: torch.argmax(x, 1))
    add("argmin", {}, {"x": r((3, 4))}, [], torch.argmin)
    # losses
    for red in ("mean", "sum", "none"):
        add(
            "mse_loss",
            {"reduction": red},
            {"a": r((3, 4)), "b": r((3, 4))},
            ["a", "b"],
            lambda a, b, red=red: tf.mse_loss(a, b, reduction=red),
        )
        add(
            "l1_loss",
            {"reduction": red},
            {"a": r((3, 4)), "b": r((3, 4))},
            ["a", "b"],
            lambda a, b, red=red: tf.l1_loss(a, b, reduction=red),
        )
        logits = np.concatenate([r(5) * 3, [1e4, -1e4, 1e4, -1e4]])
        targets = np.concatenate([rng.random(5), [1.0, 0.0, 0.0, 1.0]])
        add(
            "binary_cross_entropy_with_logits",
            {"reduction": red},
            {"x": logits, "t": targets},
            ["x", "t"],
            lambda x, t, red=red: tf.binary_cross_entropy_with_logits(x, t, reduction=red),
        )
        add(
            "nll_loss",
            {"reduction": red},
            {"x": r((4, 3)), "t": rng.integers(0, 3, 4)},
            ["x"],
            lambda x, t, red=red: tf.nll_loss(x, t, reduction=red),
        )
        add(
            "cross_entropy",
            {"reduction": red},
            {"x": 10 * r((4, 3)), "t": rng.integers(0, 3, 4)},
            ["x"],
            lambda x, t, red=red: tf.cross_entropy(x, t, reduction=red),
        )
        probs = rng.dirichlet(np.ones(3), 4)
        add("cross_entropy", {"reduction": red}, {"x": r((4, 3)), "t": probs}, ["x"],
            lambda x, t, red=red: tf.cross_entropy(x, t, reduction=red))  # fmt: skip
    # layers
    for s, p, op, k in (
        ((1, 1), (0, 0), (0, 0), (3, 3)),
        ((2, 2), (1, 1), (1, 1), (3, 3)),
        ((2, 3), (0, 1), (1, 2), (2, 4)),
        ((3, 1), (2, 0), (0, 0), (5, 2)),
    ):
        add("conv_transpose2d", {"stride": list(s), "padding": list(p), "output_padding": list(op)},
            {"x": r((2, 3, 4, 3)), "w": r((3, 2, *k)), "b": r(2)}, ["x", "w", "b"],
            lambda x, w, b, s=s, p=p, op=op: tf.conv_transpose2d(x, w, b, s, p, op))  # fmt: skip
    add(
        "embedding",
        {},
        {"idx": np.array([[0, 2, 2], [4, 1, 0]]), "w": r((5, 3))},
        ["w"],
        lambda i, w: tf.embedding(i, w),
    )
    return out


def run(case) -> tuple[dict, dict[str, np.ndarray]]:
    fn, kwargs, inputs, grad, torch_fn = case
    ts = {
        k: torch.tensor(v, requires_grad=k in grad) if np.ndim(v) or k != "base" else float(v)
        for k, v in inputs.items()
    }
    ys = torch_fn(*ts.values())
    ys = ys if isinstance(ys, tuple | list) else (ys,)
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    rng = np.random.default_rng(len(fn))
    total = 0
    for i, y in enumerate(ys):
        arrays[f"y{i}"] = y.detach().numpy()
        if y.dtype.is_floating_point:
            gy = rng.standard_normal(tuple(y.shape))
            arrays[f"gy{i}"] = gy
            total = total + (y * torch.tensor(gy)).sum()
    if grad:
        total.backward()
        arrays.update({f"g.{k}": ts[k].grad.numpy() for k in grad})
    meta = {"fn": fn, "kwargs": kwargs, "inputs": list(inputs), "grad": grad, "outputs": len(ys)}
    return meta, arrays


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    metas, arrays = [], {}
    for i, case in enumerate(cases(np.random.default_rng(args.seed))):
        meta, arr = run(case)
        metas.append({"case": f"{i:03d}", **meta})
        arrays.update({f"{i:03d}.{k}": v for k, v in arr.items()})

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    _write_atomically(args.out / "reference_ops.npz", write_npz)
    _write_atomically(args.out / "reference_ops.json",
                      lambda tmp: tmp.write_text(json.dumps(metas, indent=1)))  # fmt: skip
    print(f"wrote {len(metas)} cases to {args.out}/reference_ops.* (PyTorch {torch.__version__})")


if __name__ == "__main__":
    main()
