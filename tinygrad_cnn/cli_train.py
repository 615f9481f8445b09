"""``tinygrad-cnn train`` and its run folder: fresh, resumed, overwritten or interrupted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_common import (
    VARIANTS,
    _checkpoint_variant,
    _load,
    _network,
    _variant_name,
    _wrong_variant,
)
from .cli_plot import (
    INIT_PARAMS,
    _before_training,
    _graph,
    _initial_network,
    _plot_accuracy,
    _plot_monitor,
    _plot_pictures,
)

#: Training options a checkpoint records, with their defaults for a fresh run.
TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 0.001, "batch_size": 100, "seed": 0, "init": "he"}

#: ``--epochs`` of a fresh run, and of a resumed one whose checkpoint does not record its own.
DEFAULT_EPOCHS = 20

#: Every file ``train`` writes into its folder: what ``--overwrite`` removes, and nothing else.
RUN_FILES = ("params.npz", "history.json", "checkpoint.npz", INIT_PARAMS, "accuracy.png",
             "monitor.png", "filters.png", "mistakes.png", "confusion.png", "activations.png",
             "graph.svg")  # fmt: skip


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


def _check_fresh_folder(out: Path, overwrite: bool, given: bool = True) -> None:
    """A new run never mixes with an earlier one: refuse a folder that holds a run (its
    checkpoint or params) unless ``--overwrite`` is given; ``given``: the user named it."""
    held = [name for name in ("checkpoint.npz", "params.npz") if (out / name).is_file()]
    if held and not overwrite:
        what = _run_summary(out / "checkpoint.npz") if held[0] == "checkpoint.npz" else "params"
        where = f"--out: {out}" if given else f"{out} (the default --out)"
        raise FileExistsError(
            f"{where} already holds a run ({', '.join(held)}: {what}); continue it with "
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
        _check_fresh_folder(out, args.overwrite, given=args.out is not None)
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
