"""``tinygrad-cnn plot`` and the pictures ``train`` draws into its run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .cli_common import _check_file, _load, _load_params, _model_of_params, _network

#: The weights a run starts from, written by ``train`` next to params.npz.
INIT_PARAMS = "init_params.npz"

#: How both routes (``train``'s pictures and ``plot``) title the two moments.
MOMENTS = ("before training", "after training")


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
