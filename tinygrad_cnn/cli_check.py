"""``tinygrad-cnn check FILE.py:NAME``: the book checker for a layer or network a learner wrote."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


class UsageError(ValueError):
    """A command line that cannot be run as given (exit status 2)."""


def _import_file(path: Path):
    """Import a learner's file as a module of a package made of its folder, so both
    ``from .layers import Relu`` and ``from layers import Relu`` beside it work."""
    import hashlib
    import importlib.util
    import types

    if path.suffix != ".py" or not path.is_file():
        raise UsageError(f"check: {path} is not a Python file")
    folder = path.resolve().parent
    package = "_tinygrad_cnn_check_" + hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    if package not in sys.modules:
        pkg = types.ModuleType(package)
        pkg.__path__ = [str(folder)]
        sys.modules[package] = pkg
    for entry in (str(folder), str(folder.parent)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    name = f"{package}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _json_arg(value, rng: np.random.Generator):
    """``--args`` values: ``{"randn": [12, 5]}`` becomes a random (12, 5) float64 array."""
    if isinstance(value, dict) and set(value) == {"randn"}:
        return rng.standard_normal(tuple(value["randn"]))
    return value


def _target(spec: str, args_json: str | None):
    """The layer or network that ``FILE.py:NAME`` (with ``--args``) names."""
    file, sep, name = spec.rpartition(":")
    if not sep or not file or not name.isidentifier():
        raise UsageError(f"check: expected FILE.py:NAME, got {spec!r}")
    try:
        kwargs = json.loads(args_json) if args_json else {}
    except json.JSONDecodeError as e:
        raise UsageError(f"check: --args is not JSON: {e}") from None
    if not isinstance(kwargs, dict):
        raise UsageError(f"check: --args must be a JSON object, got {args_json}")
    module = _import_file(Path(file))
    if not hasattr(module, name):
        found = sorted(k for k in vars(module) if not k.startswith("_"))
        raise UsageError(f"check: {file} has no {name!r}; it defines {', '.join(found)}")
    obj, rng = getattr(module, name), np.random.default_rng(0)
    if not callable(obj) or hasattr(obj, "forward") and not isinstance(obj, type):
        return obj  # an instance defined in the file
    kwargs = {k: _json_arg(v, rng) for k, v in kwargs.items()}
    try:
        return obj(**kwargs)
    except TypeError as e:
        raise UsageError(f"check: cannot call {name}(**{kwargs}): {e}") from None


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be integers like 2,3,8,8, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"must be positive integers, got {text!r}")
    return shape


def _fits(net, shape: tuple[int, ...]) -> bool:
    """Whether a copy of the network's layers take a random input of ``shape``."""
    import copy

    layers = copy.deepcopy(list(net.layers.values()))
    h = np.random.default_rng(0).random(shape)
    try:
        with np.errstate(all="ignore"):
            for layer in layers:
                h = layer.forward(h)
    except Exception:
        return False
    return True


def _network_shape(net) -> tuple[int, ...]:
    """The input a network takes: its ``input_dim``, else a size its layers accept."""
    dim = getattr(net, "input_dim", None)
    if isinstance(dim, tuple | list) and all(isinstance(d, int) for d in dim):
        return (10, *dim)
    first = next(iter(net.params.values()), None)
    if not isinstance(first, np.ndarray) or first.ndim not in (2, 4):
        return (10, 784)
    if first.ndim == 2:
        return (10, first.shape[0])
    C, KH = first.shape[1], first.shape[2]
    for size in (28, *range(KH, 65)):  # the book's MNIST first, then any image size
        if _fits(net, (2, C, size, size)):
            return (10, C, size, size)
    return (10, C, 28, 28)


def _default_shape(obj, network: bool) -> tuple[int, ...]:
    """An input shape that fits a book-style layer or network when --input-shape is not given."""
    if network:
        return _network_shape(obj)
    W = getattr(obj, "W", None)
    if isinstance(W, np.ndarray) and W.ndim == 2:
        return (4, W.shape[0])
    if isinstance(W, np.ndarray) and W.ndim == 4:
        return (2, W.shape[1], W.shape[2] + 3, W.shape[3] + 3)
    gamma = getattr(obj, "gamma", None)
    if isinstance(gamma, np.ndarray):
        return (4, gamma.size)
    return (4, 10) if _is_loss(obj) else (2, 3, 6, 6)


def _image_shape(features: int) -> tuple[int, int, int, int] | None:
    """(2, C, S, S) with C*S*S == features and S >= 2 as large as it goes, or None."""
    side = next((s for s in range(int(features**0.5), 1, -1) if features % (s * s) == 0), None)
    return None if side is None else (2, features // (side * side), side, side)


def _is_loss(obj) -> bool:
    from .book import is_loss_layer

    return is_loss_layer(obj)


def _run_check(obj, network: bool, shape: tuple[int, ...], seed: int):
    from .book import check_layer, check_network
    from .bookbridge import layer_error

    rng = np.random.default_rng(seed)
    if network:
        x = rng.random(shape)  # like normalized images, in [0, 1)
        try:  # the number of classes
            k = np.shape(obj.predict(x[:1]))[-1] if hasattr(obj, "predict") else 10
        except Exception as e:
            who = f"check({type(obj).__name__})"
            raise layer_error(who, "network.predict", e, "forward") from e
        return check_network(obj, x, rng.integers(0, k, shape[0]), seed=seed)
    if _is_loss(obj):
        x = rng.standard_normal(shape)
        return check_layer(obj, x, rng.integers(0, shape[-1], shape[0]), seed=seed)
    return check_layer(obj, rng.standard_normal(shape), seed=seed)


def cmd_check(args: argparse.Namespace) -> int:
    from .book import LayerError

    obj = _target(args.target, args.args)
    network = all(hasattr(obj, a) for a in ("params", "layers", "loss", "gradient"))
    if not network and not (hasattr(obj, "forward") and hasattr(obj, "backward")):
        raise UsageError(
            f"check: {args.target} is a {type(obj).__name__}, neither a book-style layer "
            "(forward/backward) nor a network (params, layers, loss, gradient)"
        )
    guessed = args.input_shape is None
    shape = args.input_shape or _default_shape(obj, network)
    try:
        reports = [_run_check(obj, network, shape, args.seed)]
    except LayerError as e:
        if guessed and e.phase == "forward":  # the checker's guess, not the user's layer
            raise UsageError(
                f"check: the input shape {','.join(map(str, shape))} guessed for "
                f"{args.target} does not fit: {e}; pass the shape it takes with "
                "--input-shape N,C,H,W"
            ) from None
        print(f"tinygrad-cnn check: {e}")
        return 1
    except ValueError as e:  # e.g. a shape the check refuses
        if not guessed:
            raise
        raise UsageError(
            f"check: with the guessed input shape {shape}: {e}; pass --input-shape"
        ) from None
    notes = []
    W = getattr(obj, "W", None)
    if guessed and not network and isinstance(W, np.ndarray) and W.ndim == 2:
        # An Affine reshapes (N, C, H, W) to (N, D) and back: a 2-D input never shows it.
        image = _image_shape(W.shape[0])
        try:
            if image is None:
                raise LayerError(f"{W.shape[0]} features do not factor as C*H*W")
            reports.append(_run_check(obj, False, image, args.seed))
        except LayerError as e:
            notes.append(
                f"the 4-D input path (N, C, H, W) -> (N, D) was not checked ({e}); "
                "check it with --input-shape N,C,H,W"
            )
    print("\n\n".join(str(r) for r in reports))
    for note in notes:
        print(f"note: {note}")
    if args.out:
        shown = next((r for r in reports if not r.ok), reports[0])
        print(f"wrote {shown.render(args.out)} (wrong gradients in red)")
    return 0 if all(r.ok for r in reports) else 1
