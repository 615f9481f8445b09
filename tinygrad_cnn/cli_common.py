"""What the CLI's commands share: the networks, reading params and data, option types."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]

MODELS = ["simpleconvnet", "deepconvnet"]

#: Every network the CLI builds, as (--model, --batch-norm).
VARIANTS = (("simpleconvnet", False), ("deepconvnet", False), ("deepconvnet", True))


def _network(
    model: str, init: float | str | None = None, seed: int | None = 0, batch_norm: bool = False
):
    """A fresh ``SimpleConvNet`` or ``DeepConvNet`` (``--model``, ``--batch-norm``); ``init``
    None: the class's default (the book's: 0.01 for SimpleConvNet, He for DeepConvNet)."""
    from .models import DeepConvNet, SimpleConvNet

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; available: {', '.join(MODELS)}")
    if batch_norm and model != "deepconvnet":
        raise ValueError(
            f"--batch-norm is an option of --model deepconvnet; {model} has no batch-norm variant"
        )
    kwargs = {"seed": seed} if init is None else {"seed": seed, "weight_init_std": init}
    if model == "simpleconvnet":
        return SimpleConvNet(**kwargs)
    return DeepConvNet(batch_norm=batch_norm, **kwargs)


def _variant_name(model: str, batch_norm: bool) -> str:
    name = {"simpleconvnet": "SimpleConvNet", "deepconvnet": "DeepConvNet"}[model]
    return name + (" (batch norm)" if batch_norm else "")


def _wrong_variant(path: Path, fit: tuple[str, bool], given: tuple[str, bool]) -> ValueError:
    """The error for a file of the variant ``fit`` read with the options ``given``."""
    advice = f"pass --model {fit[0]}" + (" --batch-norm" if fit[1] else "")
    if given[1] and not fit[1]:
        advice += " without --batch-norm"
    return ValueError(
        f"{path} holds {_variant_name(*fit)} parameters, not {_variant_name(*given)}'s: {advice}"
    )


def _load_params(net, path: Path, model: str, batch_norm: bool, flag: str = "--params") -> None:
    """``net.load_params(path)``; when the file fits another of the ``VARIANTS``, say which."""
    _check_file(flag, path)
    batch_norm = bool(batch_norm)  # the option is None when not given
    try:
        net.load_params(path)
    except ValueError as first:
        for fit in VARIANTS:
            if fit == (model, batch_norm):
                continue
            try:
                _network(fit[0], batch_norm=fit[1]).load_params(path)
            except ValueError:
                continue
            raise _wrong_variant(path, fit, (model, batch_norm)) from first
        raise


def _params_variant(path: Path) -> tuple[str, bool] | None:
    """The variant whose ``load_params`` reads ``path`` (.npz or the book's .pkl), if any."""
    for fit in VARIANTS:
        try:
            _network(fit[0], batch_norm=fit[1]).load_params(path)
        except ValueError:
            continue
        return fit
    return None


def _model_of_params(args: argparse.Namespace) -> None:
    """``--model`` not given: the network ``--params`` holds (else simpleconvnet). A given
    ``--model`` or ``--batch-norm`` is kept, so a file that disagrees is refused with advice."""
    if args.model is None and getattr(args, "params", None) is not None:
        _check_file("--params", Path(args.params))
        found = _params_variant(Path(args.params))
        if found is not None:
            args.model, args.batch_norm = found[0], bool(args.batch_norm) or found[1]
    args.model = args.model or "simpleconvnet"


def _checkpoint_variant(checkpoint: Path) -> tuple[str, bool] | None:
    """The variant whose parameters (names and shapes) a checkpoint holds, if any."""
    from .io import npz_info

    saved = {k[6:]: shape for k, (shape, _) in npz_info(checkpoint).items() if k[:6] == "param/"}
    for model, batch_norm in VARIANTS:
        state = _network(model, batch_norm=batch_norm).state_arrays()
        if saved == {k: a.shape for k, a in state.items()}:
            return model, batch_norm
    return None


def _load(dataset: str, data_dir: str | None):
    from .data import load_mnist, load_mnist_mini

    if dataset == "mini":
        if data_dir is not None:
            raise ValueError(
                f"--data-dir {data_dir} is only read with --dataset mnist; the bundled mini "
                "set (the default --dataset) needs no folder"
            )
        return load_mnist_mini()
    return load_mnist(root=data_dir)


def _check_file(flag: str, path: Path) -> None:
    """Raise, with ``flag`` in front of the message, unless ``path`` is a regular file."""
    from .io import check_readable_file

    try:
        check_readable_file(path)
    except OSError as e:
        where = f": {e.filename}" if e.filename and e.filename not in e.strerror else ""
        raise type(e)(e.errno, f"{flag}: {e.strerror}{where}") from None
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None


def _option_error(option: str, e: OSError | ValueError) -> OSError | ValueError:
    """``e`` reworded as a complaint about a command-line option (no library prefixes)."""
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    reason = re.sub(r"^(explore|atomic_write): ", "", reason)
    return type(e)(f"{option}: {reason}")


def _path(text: str) -> str:
    """A path option: an empty string (an unset shell variable) would mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value


_INIT_NAMES = ("he", "relu", "xavier", "sigmoid")


def _init(text: str) -> float | str:
    """``--init``: 'he', 'xavier' (or their aliases) or a number (the std, e.g. the book's 0.01)."""
    if text.lower() in _INIT_NAMES:
        return text.lower()
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be {', '.join(_INIT_NAMES)} or a finite positive std, got {text!r}"
        ) from None
