"""The command line: ``tinygrad-cnn train|evaluate|plot|graph|audit|check`` (``python -m ...``)."""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

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


#: Training options a checkpoint records, with their defaults for a fresh run.
TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 0.001, "batch_size": 100, "seed": 0, "init": "he"}
#: ``--epochs`` of a fresh run, and of a resumed one whose checkpoint does not record its own.
DEFAULT_EPOCHS = 20


def _resume_settings(args: argparse.Namespace, checkpoint: Path) -> tuple[dict, list[str]]:
    """Options for a resumed run: the checkpoint's, except an explicit ``--lr`` or ``--epochs``.

    An explicit option that contradicts what the checkpoint continues is refused, and so is a
    target of epochs the checkpoint has already reached. Batch normalisation is read from the
    checkpoint's arrays (its ``norm*`` layers).
    """
    from .train import checkpoint_config

    saved = checkpoint_config(checkpoint)
    found = _checkpoint_variant(checkpoint)  # None: load_checkpoint says what differs
    if found is not None and (found[0] != args.model or args.batch_norm and not found[1]):
        raise _wrong_variant(checkpoint, found, (args.model, bool(args.batch_norm)))
    given = {k: getattr(args, k) for k in TRAIN_DEFAULTS if getattr(args, k) is not None}
    if "init" in given:
        raise ValueError(
            f"--init {given['init']} does nothing with --resume: the weights come from {checkpoint}"
        )
    for key in ("optimizer", "batch_size", "seed"):
        if key in given and key in saved and given[key] != saved[key]:
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"{flag} {given[key]} conflicts with {checkpoint}, which was trained with "
                f"{flag} {saved[key]}; drop {flag} to continue it, or start a new --out"
            )
    settings = {**TRAIN_DEFAULTS, **{k: v for k, v in saved.items() if k in TRAIN_DEFAULTS}}
    settings.update((k, v) for k, v in given.items())
    settings["lr"] = given.get("lr")  # None: keep the checkpoint's
    if "seed" not in saved:  # a checkpoint of an earlier version: its seed is unknown
        settings["seed"] = None
    settings["batch_norm"] = found[1] if found is not None else bool(args.batch_norm)
    notes = []
    if "lr" in given and "lr" in saved and given["lr"] != saved["lr"]:
        notes.append(f"lr {given['lr']} replaces the checkpoint's {saved['lr']}")
    settings["epochs"] = args.epochs or saved.get("epochs") or DEFAULT_EPOCHS
    unknown = args.epochs is None and "epochs" not in saved
    if unknown:  # a checkpoint of an earlier version
        notes.append(
            f"{checkpoint} does not record the --epochs it was started with: training to "
            f"{DEFAULT_EPOCHS}, the default (pass --epochs to choose)"
        )
    done, target = saved.get("epoch", 0), settings["epochs"]
    if done >= target:
        run = checkpoint.parent
        asked = f"--epochs {target}" + (" (the default)" if unknown else "")
        if args.epochs is None and not unknown:
            raise ValueError(
                f"{run} holds a finished run: {done} of its {target} epochs trained, nothing is "
                f"left to train: pass a larger --epochs to continue it"
            )
        raise ValueError(
            f"{run} holds a run trained for {done} epochs; {asked} leaves nothing to train: "
            "pass a larger --epochs to continue it"
        )
    return settings, notes


def _run_summary(checkpoint: Path) -> str:
    """What a run's checkpoint holds, e.g. 'DeepConvNet, epoch 3 of 20' (', finished')."""
    from .train import checkpoint_config

    try:
        saved, found = checkpoint_config(checkpoint), _checkpoint_variant(checkpoint)
    except (OSError, ValueError) as e:
        return f"a checkpoint that cannot be read: {e}"
    name = _variant_name(*found) if found is not None else "an unknown network"
    done, target = saved["epoch"], saved.get("epochs")
    if target is None:  # a checkpoint of an earlier version
        return f"{name}, epoch {done}"
    return f"{name}, epoch {done} of {target}" + (", finished" if done >= target else "")


def _default_run() -> Path:
    """``--resume`` without ``--out`` and ``--model``: the one default folder (runs/MODEL)
    that holds a checkpoint, or the one whose run is unfinished; otherwise refused."""
    folders = list(dict.fromkeys(Path("runs") / model for model, _ in VARIANTS))
    found = [f for f in folders if (f / "checkpoint.npz").is_file()]
    if not found:
        where = " or ".join(str(f / "checkpoint.npz") for f in folders)
        raise FileNotFoundError(f"--resume: no checkpoint at {where}")
    summaries = {f: _run_summary(f / "checkpoint.npz") for f in found}
    unfinished = [f for f in found if not summaries[f].endswith(", finished")]
    if len(found) > 1 and len(unfinished) == 1:
        print(f"--resume: continuing {unfinished[0]}, the only unfinished run in a default folder")
        return unfinished[0]
    if len(found) > 1:
        runs = "; ".join(f"{f} ({summaries[f]})" for f in found)
        raise ValueError(
            f"--resume: more than one run to continue: {runs}; choose one with --out DIR "
            "(or --model MODEL)"
        )
    print(f"--resume: continuing {found[0]}, the only default folder with a checkpoint")
    return found[0]


def _check_fresh_folder(out: Path, overwrite: bool) -> None:
    """A new run never mixes with an earlier one: refuse a folder that holds a run (its
    checkpoint or params) unless ``--overwrite`` is given."""
    held = [name for name in ("checkpoint.npz", "params.npz") if (out / name).is_file()]
    if held and not overwrite:
        what = _run_summary(out / "checkpoint.npz") if held[0] == "checkpoint.npz" else "params"
        raise FileExistsError(
            f"--out: {out} already holds a run ({', '.join(held)}: {what}); continue it with "
            "--resume, train into another folder with --out DIR, or replace it with --overwrite"
        )


def _remove_earlier_run(out: Path) -> None:
    """``--overwrite``: remove the files ``train`` writes (``RUN_FILES``), and only those."""
    removed = [name for name in RUN_FILES if (out / name).is_file()]
    for name in removed:
        (out / name).unlink()
    if removed:
        print(f"--overwrite: removed the earlier run's {', '.join(removed)} from {out}/")


def _interrupted(trainer, checkpoint: Path, out: Path) -> KeyboardInterrupt:
    """The Ctrl-C of a training run, saying what its checkpoint holds and how to continue."""
    import shlex

    from .train import checkpoint_config

    try:  # what the file holds, not what the trainer counted: the save itself may be cut
        done = checkpoint_config(checkpoint)["epoch"] if checkpoint.is_file() else None
    except (OSError, ValueError):
        done = None
    if trainer.epoch > (done or 0):  # the epoch ended, its checkpoint was not written
        when = f"while saving epoch {trainer.epoch} of {trainer.epochs}"
    elif trainer.epoch < trainer.epochs:
        when = f"in epoch {trainer.epoch + 1} of {trainer.epochs}"
    else:
        when = f"after epoch {trainer.epochs} of {trainer.epochs}, while writing the results"
    if done is None:
        return KeyboardInterrupt(f"{when}; no checkpoint was written yet, so nothing was saved")
    if done >= trainer.epochs:
        return KeyboardInterrupt(
            f"{when}; {checkpoint} holds all {done} epochs, but the other files in {out} may "
            "be missing or stale"
        )
    return KeyboardInterrupt(
        f"{when}; {checkpoint} holds epoch {done}; continue with: "
        f"tinygrad-cnn train --out {shlex.quote(str(out))} --resume"
    )


def cmd_train(args: argparse.Namespace) -> int:
    from .train import Trainer

    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in the folder, --overwrite replaces it: "
                         "pass one of them")  # fmt: skip
    given_model, args.model = args.model, args.model or "simpleconvnet"
    if args.resume and args.out is None and given_model is None:
        out = _default_run()  # the interrupted run may be any model's
    else:
        out = Path(args.out if args.out is not None else f"runs/{args.model}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out: {out} exists and is not a folder")
    checkpoint = out / "checkpoint.npz"
    if args.resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
    if args.resume and given_model is None:  # continue whichever network the checkpoint holds
        found = _checkpoint_variant(checkpoint)
        args.model = found[0] if found is not None else args.model
    if args.resume:
        settings, notes = _resume_settings(args, checkpoint)
    else:
        given = {k: getattr(args, k) for k in TRAIN_DEFAULTS}
        settings, notes = {k: given[k] if given[k] is not None else v
                           for k, v in TRAIN_DEFAULTS.items()}, []  # fmt: skip
        settings["batch_norm"] = bool(args.batch_norm)
        settings["epochs"] = args.epochs or DEFAULT_EPOCHS
        _network(args.model, batch_norm=settings["batch_norm"])  # a bad option before any file
        _check_fresh_folder(out, args.overwrite)
    (x_train, t_train), (x_test, t_test) = _load(args.dataset, args.data_dir)
    if args.limit:
        x_train, t_train = x_train[: args.limit], t_train[: args.limit]
    net = _network(args.model, settings["init"], settings["seed"], settings["batch_norm"])
    lr = settings["lr"] or TRAIN_DEFAULTS["lr"]  # on resume, the checkpoint's replaces it
    trainer = Trainer(
        net, x_train, t_train, x_test, t_test,
        epochs=settings["epochs"], mini_batch_size=settings["batch_size"],
        optimizer=settings["optimizer"], optimizer_param={"lr": lr},
        progress=not args.quiet, seed=settings["seed"], checkpoint=checkpoint,
        monitor=args.monitor,
    )  # fmt: skip
    if args.resume:
        trainer.load_checkpoint(checkpoint)
        if settings["lr"] is not None:
            trainer.optimizer.lr = settings["lr"]  # the explicit --lr, announced below
    start = f"resumed from {checkpoint} after epoch {trainer.epoch}" if args.resume else ""
    seed = "of the checkpoint" if settings["seed"] is None else settings["seed"]
    print(
        f"training {_variant_name(args.model, settings['batch_norm'])} on {args.dataset} "
        f"MNIST: {len(x_train):,} train / {len(x_test):,} test images, "
        f"{settings['epochs']} epochs, batch {settings['batch_size']}, "
        f"{settings['optimizer']} lr={trainer.optimizer.lr}, "
        + (start if args.resume else f"init {settings['init']}")
        + f", seed {seed}"
        + "".join(f"; {note}" for note in notes),
        flush=True,
    )
    if args.overwrite:  # only now: a run that fails to start leaves the earlier one whole
        _remove_earlier_run(out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:  # the weights training starts from, for `plot filters|activations`
        net.save_params(out / INIT_PARAMS)
    initial = _initial_network(out / INIT_PARAMS, args.model, settings["batch_norm"])
    probe, filters_before, acts_first = _before_training(initial, x_test)
    try:
        return _train_and_write(args, trainer, out, settings, probe, filters_before, acts_first,
                                (x_train, t_train, x_test, t_test))  # fmt: skip
    except KeyboardInterrupt:
        raise _interrupted(trainer, checkpoint, out) from None


def _train_and_write(args, trainer, out, settings, probe, filters_before, acts_first, data):
    """Train, then write the run's files and say so."""
    (x_train, t_train, x_test, t_test), net = data, trainer.network
    history = trainer.train()
    net.save_params(out / "params.npz")
    from .io import atomic_write

    with atomic_write(out / "history.json", "w") as f:
        json.dump(history, f, indent=1)
    written = ["params.npz", "history.json", "checkpoint.npz"]
    written += [] if args.resume else [INIT_PARAMS]
    written += _plot_accuracy(history, out / "accuracy.png")
    if history.get("monitor"):
        written += _plot_monitor(history, out / "monitor.png")
    written += _plot_pictures(net, filters_before, acts_first, probe, x_test, t_test, out)
    n = settings["batch_size"]
    written += _graph(net, x_train[:n], t_train[:n], out)
    seconds = sum(history["epoch_seconds"])
    print(
        f"final test accuracy {history['test_acc'][-1]:.4f} after {trainer.epoch} epochs "
        f"({seconds:.1f} s training); wrote {', '.join(written)} to {out}/"
    )
    return 0


def _plot_accuracy(history: dict, path: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed, so accuracy.png was not drawn", file=sys.stderr)
        return []
    from .io import atomic_write

    epochs = np.arange(1, len(history["train_acc"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, history["train_acc"], marker="o", label="train")
    ax.plot(epochs, history["test_acc"], marker="s", linestyle="--", label="test")
    ax.set_xlabel("epochs")
    ax.set_ylabel("accuracy")
    ax.set_ylim(min(0.9, min(history["test_acc"])), 1.0)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [path.name]


#: The weights a run starts from, written by ``train`` next to params.npz.
INIT_PARAMS = "init_params.npz"
#: Every file ``train`` writes into its folder: what ``--overwrite`` removes, and nothing else.
RUN_FILES = ("params.npz", "history.json", "checkpoint.npz", INIT_PARAMS, "accuracy.png",
             "monitor.png", "filters.png", "mistakes.png", "confusion.png", "activations.png",
             "graph.svg")  # fmt: skip
#: How both routes (``train``'s pictures and ``plot``) title the two moments.
MOMENTS = ("before training", "after training")


def _initial_network(path: Path, model: str, batch_norm: bool, flag: str = "--params"):
    """The network at the weights of ``path`` (a run's init_params.npz), or None if absent."""
    if not path.is_file():
        return None
    net = _network(model, batch_norm=batch_norm)
    _load_params(net, path, model, batch_norm, flag)
    return net


def _before_training(initial, x_test: np.ndarray):
    """What the pictures compare with: (probe images, first filters, activations) at the
    weights training starts from; filters and activations None when ``initial`` is None
    (unknown), all three None when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None, None, None
    from .plots import collect_activations

    probe = x_test[:500]
    if initial is None:
        return probe, None, None
    return probe, initial.conv1.weight.numpy().copy(), collect_activations(initial, probe)


def _unknown_start(params: Path) -> None:
    print(
        f"note: no {INIT_PARAMS} next to {params} (pass --init-params FILE), so the weights "
        "before training are unknown: drawing the trained weights only",
        file=sys.stderr,
    )


def _plot_pictures(net, filters_before, acts_first, probe, x_test, t_test, out: Path) -> list[str]:
    """filters.png, mistakes.png, confusion.png, activations.png (the book's figures)."""
    if probe is None:
        print("note: matplotlib is not installed, so the pictures were not drawn", file=sys.stderr)
        return []
    from . import plots

    if filters_before is None:
        _unknown_start(out / "params.npz")
    plots.plot_filters(filters_before, net.conv1.weight.numpy(), out / "filters.png")
    plots.plot_mistakes(net, x_test, t_test, out / "mistakes.png")
    plots.plot_confusion(net, x_test, t_test, out / "confusion.png")
    acts_last = plots.collect_activations(net, probe)
    plots.plot_activations(acts_first, acts_last, out / "activations.png", labels=MOMENTS)
    return ["filters.png", "mistakes.png", "confusion.png", "activations.png"]


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plots

    _model_of_params(args)
    params, out = Path(args.params), Path(args.out or f"{args.what}.png")
    try:
        plots.picture_format("plot", out)
    except ValueError as e:
        raise ValueError(f"--out: {str(e).split(': ', 1)[1]}") from None
    net = _network(args.model, batch_norm=args.batch_norm)
    _load_params(net, params, args.model, args.batch_norm)
    initial = None
    if args.what in ("filters", "activations"):
        start = Path(args.init_params) if args.init_params else params.with_name(INIT_PARAMS)
        if args.init_params:
            _check_file("--init-params", start)
        initial = _initial_network(start, args.model, args.batch_norm, "--init-params")
        if initial is None:
            _unknown_start(params)
    elif args.init_params:
        raise ValueError(f"--init-params is read by `plot filters|activations`, not {args.what}")
    _, (x_test, t_test) = _load(args.dataset, args.data_dir)
    if args.what == "filters":
        before = None if initial is None else initial.conv1.weight.numpy()
        plots.plot_filters(before, net.conv1.weight.numpy(), out)
    elif args.what == "mistakes":
        plots.plot_mistakes(net, x_test, t_test, out)
    elif args.what == "confusion":
        plots.plot_confusion(net, x_test, t_test, out)
    else:
        probe = x_test[:500]
        first = None if initial is None else plots.collect_activations(initial, probe)
        plots.plot_activations(first, plots.collect_activations(net, probe), out,
                               labels=MOMENTS)  # fmt: skip
    print(f"wrote {out}")
    return 0


def _plot_monitor(history: dict, path: Path) -> list[str]:
    from .monitor import plot_monitor

    try:
        plot_monitor(history, path)
    except ImportError:
        print("note: matplotlib is not installed, so monitor.png was not drawn", file=sys.stderr)
        return []
    return [path.name]


def _graph(net, x: np.ndarray, t: np.ndarray, out: Path) -> list[str]:
    try:
        from .viz import GraphvizNotFoundError, render_graph
    except ImportError as e:
        print(f"note: graph.svg not drawn ({e})", file=sys.stderr)
        return []
    loss = net.loss(x, t)
    try:
        render_graph(loss, out / "graph.svg")
    except GraphvizNotFoundError as e:
        print(f"note: graph.svg not drawn: {e}", file=sys.stderr)
        return []
    return ["graph.svg"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .models import accuracy
    from .nn import predict_classes

    _model_of_params(args)
    params = Path(args.params)
    net = _network(args.model, batch_norm=args.batch_norm)
    _load_params(net, params, args.model, args.batch_norm)
    _, (x_test, t_test) = _load(args.dataset, args.data_dir)
    acc = accuracy(net, x_test, t_test)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (t_test, predict_classes(net, x_test)), 1)
    print(f"test accuracy {acc:.4f} ({int(np.trace(confusion))}/{len(t_test)}) on {args.dataset}")
    print("confusion matrix (rows: true digit, columns: predicted)")
    print("      " + "".join(f"{j:>6}" for j in range(10)))
    for i in range(10):
        print(f"{i:>6}" + "".join(f"{v:>6}" for v in confusion[i]))
    return 0


def _demo_loss(model: str = "simpleconvnet", params: str | None = None, batch_norm: bool = False):
    """(network, loss) of ``model`` (seed 0, or ``params``) on 100 bundled images."""
    from .data import load_mnist_mini

    net = _network(model, batch_norm=batch_norm)
    if params is not None:
        _load_params(net, Path(params), model, batch_norm)
    (x, t), _ = load_mnist_mini()
    return net, net.loss(x[:100], t[:100])


def _describe(net, params: str | None) -> str:
    norm = " with batch norm" if any(n.startswith("norm") for n, _ in net.named_modules()) else ""
    return f"{type(net).__name__}{norm} ({params or 'seed 0'}) on 100 mini-MNIST images"


def _option_error(option: str, e: OSError | ValueError) -> OSError | ValueError:
    """``e`` reworded as a complaint about a command-line option (no library prefixes)."""
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    reason = re.sub(r"^(explore|atomic_write): ", "", reason)
    return type(e)(f"{option}: {reason}")


def cmd_graph(args: argparse.Namespace) -> int:
    from .viz import draw_graph, save_graph

    _model_of_params(args)
    if args.grads and args.html is not None and args.out is None:
        raise ValueError(
            "--grads labels the --out picture with gradient norms; the --html explorer always "
            "shows them (press play): drop --grads, or add --out FILE.svg"
        )
    net, loss = _demo_loss(args.model, args.params, args.batch_norm)
    if args.html is not None:
        from .viz import explore

        try:
            page = explore(loss, args.html, title=f"{type(net).__name__} loss graph")
        except (OSError, ValueError) as e:
            raise _option_error("--html", e) from e
        print(f"wrote {page}: interactive explorer of {_describe(net, args.params)} "
              f"({page.stat().st_size / 1024:.0f} KiB, open it in a browser)")  # fmt: skip
        if args.out is None:  # with --html, the picture is drawn only when --out is given
            return 0
    graph = draw_graph(loss, show_grads=args.grads)
    path = save_graph(graph, args.out or "graph.svg")
    source = graph.source
    nodes = len(re.findall(r"^\s*n\d+ \[", source, flags=re.M))
    edges = len(re.findall(r"^\s*n\d+ -> n\d+", source, flags=re.M))
    print(
        f"wrote {path}: loss graph of {_describe(net, args.params)}, {nodes} nodes, {edges} edges "
        f"(loss {loss.item():.4f})"
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit_graph

    _model_of_params(args)
    net, loss = _demo_loss(args.model, args.params, args.batch_norm)
    report = audit_graph(loss)
    print(f"gradient audit of {_describe(net, args.params)}, float64")
    print(report)
    if args.out:
        print(f"wrote {report.render(args.out)} (failing ops in red)")
    return 0 if report.ok else 1


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


def _model_options(p: argparse.ArgumentParser) -> None:
    train = p.prog.endswith(" train")
    p.add_argument(
        "--model", type=str.lower, choices=MODELS,
        help="the network (any case); default simpleconvnet"
        + (", or with --resume the checkpoint's" if train else ", or the one --params holds"),
    )  # fmt: skip
    p.add_argument(
        "--batch-norm", action="store_true", default=None,
        help="DeepConvNet with batch normalisation (only with --model deepconvnet)"
        + ("; --resume keeps the checkpoint's" if train else "; default: as --params holds"),
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinygrad-cnn",
        description="Train, evaluate and inspect the book's SimpleConvNet and DeepConvNet.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a network (default: the bundled mini MNIST)")
    _model_options(p)
    p.add_argument(
        "--dataset",
        choices=["mini", "mnist"],
        default="mini",
        help="mini: bundled 10k/2k subset (offline); mnist: the full set via load_mnist",
    )
    p.add_argument(
        "--data-dir", type=_path, help="folder with the MNIST IDX files (for --dataset mnist)"
    )
    p.add_argument(
        "--epochs", type=_positive,
        help=f"train up to this many epochs (default {DEFAULT_EPOCHS}; with --resume, the "
        "checkpoint's, so an interrupted run ends where it was meant to)",
    )  # fmt: skip
    # Options a checkpoint records default to None, so --resume can tell which were given.
    p.add_argument("--batch-size", type=_positive, help="default 100")
    p.add_argument("--optimizer", type=str.lower, choices=OPTIMIZERS, help="default adam")
    p.add_argument(
        "--lr", type=_positive_float, help="default 0.001; with --resume, replaces the saved one"
    )
    p.add_argument(
        "--init",
        type=_init,
        help="weight init: he (default), xavier, or a std such as the book's 0.01",
    )
    p.add_argument("--seed", type=_non_negative, help="default 0")
    p.add_argument("--out", type=_path, help="output folder (default runs/MODEL)")
    p.add_argument(
        "--resume", action="store_true",
        help="continue from OUT/checkpoint.npz; without --out and --model, from the one "
        "runs/MODEL folder that holds a checkpoint",
    )  # fmt: skip
    p.add_argument(
        "--overwrite", action="store_true",
        help="start afresh in an OUT that holds a run, removing the files train wrote there "
        "(without it such an OUT is refused, so no run is lost or mixed with another)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar (per-epoch lines stay)")
    p.add_argument("--limit", type=_positive, help="train on the first N images (quick trials)")
    p.add_argument(
        "--monitor", nargs="?", type=_positive, const=50, metavar="N",
        help="every N steps (default 50), record per-layer gradient norms, update/weight "
        "ratios, activation statistics and dead ReLUs into history.json and monitor.png",
    )  # fmt: skip
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plot", help="draw filters, mistakes, confusion or activations")
    p.add_argument("what", choices=["filters", "mistakes", "confusion", "activations"])
    p.add_argument("--params", type=_path, required=True,
                   help="params.npz (or the book's params.pkl)")  # fmt: skip
    _model_options(p)
    p.add_argument("--dataset", choices=["mini", "mnist"], default="mini")
    p.add_argument("--data-dir", type=_path)
    p.add_argument("--out", type=_path,
                   help="the picture to write, .png, .svg or .pdf (default WHAT.png)")  # fmt: skip
    p.add_argument(
        "--init-params", type=_path, metavar="FILE",
        help=f"filters/activations: the weights before training (default: the {INIT_PARAMS} "
        "that train writes next to --params); without it the trained weights alone are drawn",
    )  # fmt: skip
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("evaluate", help="test accuracy and confusion matrix of saved params")
    p.add_argument(
        "--params", type=_path, required=True, help="params.npz (or the book's params.pkl)"
    )
    _model_options(p)
    p.add_argument("--dataset", choices=["mini", "mnist"], default="mini")
    p.add_argument("--data-dir", type=_path)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "graph", help="render a network's loss graph",
        description="Draw a network's loss graph on 100 bundled images: a picture (--out, "
        "default graph.svg) or an interactive page (--html).",
    )  # fmt: skip
    _model_options(p)
    p.add_argument(
        "--params", type=_path, help="draw a trained network: params.npz (or the book's .pkl)"
    )
    p.add_argument("--grads", action="store_true",
                   help="label the --out picture's edges with gradient norms")  # fmt: skip
    p.add_argument("--out", type=_path, help=".svg, .png, .pdf or .dot (default graph.svg)")
    p.add_argument(
        "--html", type=_path, metavar="FILE.html",
        help="write the interactive explorer (one self-contained page); the --out picture "
        "is then drawn only if --out is given",
    )  # fmt: skip
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("audit", help="check every op's backward in a network's loss graph")
    _model_options(p)
    p.add_argument(
        "--params", type=_path, help="audit a trained network: params.npz (or the book's .pkl)"
    )
    p.add_argument(
        "--out", type=_path, help="also draw the graph with failing ops in red (.svg, .dot, ...)"
    )
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("check", help="check a book-style layer or network you wrote")
    p.add_argument(
        "target",
        metavar="FILE.py:NAME",
        help="a class, a zero-argument factory, or an instance in your file",
    )
    p.add_argument(
        "--input-shape",
        type=_shape,
        metavar="N,C,H,W",
        help="shape of the random input (default: one that fits the layer)",
    )
    p.add_argument(
        "--args",
        metavar="JSON",
        help='keyword arguments for NAME; {"randn": [12, 5]} makes a random array',
    )
    p.add_argument("--seed", type=_non_negative, default=0)
    p.add_argument("--out", type=_path, help="draw the report, wrong gradients in red (.svg)")
    p.set_defaults(func=cmd_check)
    return parser  # fmt: skip


def _never_fail_on_encoding() -> None:
    """Print paths and messages even where the terminal's encoding cannot show them."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # closed, or a stream that cannot change
                pass


def main(argv: list[str] | None = None) -> int:
    _never_fail_on_encoding()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `tinygrad-cnn evaluate ... | head`: the reader left
        sys.stderr.close()
        return 141
    except KeyboardInterrupt as e:  # train's says what was saved and how to continue
        detail = f" {e.args[0]}" if e.args else ""
        print(f"tinygrad-cnn: interrupted{detail}", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as e:
        msg = str(e)
        if isinstance(e, OSError) and e.strerror:  # without the "[Errno 2]" in front
            name = str(e.filename) if e.filename is not None else ""
            msg = e.strerror + (f": {name}" if name and name not in e.strerror else "")
        msg = msg.strip().replace("\n", " ")
        print(f"tinygrad-cnn: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
