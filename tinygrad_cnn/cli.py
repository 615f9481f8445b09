"""The command line: ``tinygrad-cnn train|evaluate|graph|audit`` (or ``python -m tinygrad_cnn``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]


def _load(dataset: str, data_dir: str | None):
    from .data import load_mnist, load_mnist_mini

    if dataset == "mini":
        return load_mnist_mini()
    return load_mnist(root=data_dir)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _init(text: str) -> float | str:
    """``--init``: 'he', 'xavier' (or their aliases) or a number (the std, e.g. the book's 0.01)."""
    try:
        return float(text)
    except ValueError:
        return text


def cmd_train(args: argparse.Namespace) -> int:
    from .nn import SimpleConvNet
    from .train import Trainer

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out: {out} exists and is not a folder")
    checkpoint = out / "checkpoint.npz"
    if args.resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
    (x_train, t_train), (x_test, t_test) = _load(args.dataset, args.data_dir)
    if args.limit:
        x_train, t_train = x_train[: args.limit], t_train[: args.limit]
    print(
        f"training SimpleConvNet on {args.dataset} MNIST: {len(x_train):,} train / "
        f"{len(x_test):,} test images, {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.optimizer} lr={args.lr}, init {args.init}, seed {args.seed}",
        flush=True,
    )
    net = SimpleConvNet(weight_init_std=_init(args.init), seed=args.seed)
    trainer = Trainer(
        net, x_train, t_train, x_test, t_test,
        epochs=args.epochs, mini_batch_size=args.batch_size, optimizer=args.optimizer,
        optimizer_param={"lr": args.lr}, progress=not args.quiet, seed=args.seed,
        checkpoint=checkpoint,
    )  # fmt: skip
    if args.resume:
        trainer.load_checkpoint(checkpoint)
        print(f"resumed from {checkpoint} after epoch {trainer.epoch}", flush=True)
    history = trainer.train()
    out.mkdir(parents=True, exist_ok=True)
    net.save_params(out / "params.npz")
    from .io import atomic_write

    with atomic_write(out / "history.json", "w") as f:
        json.dump(history, f, indent=1)
    written = ["params.npz", "history.json", "checkpoint.npz"]
    written += _plot_accuracy(history, out / "accuracy.png")
    written += _graph(net, x_train[: args.batch_size], t_train[: args.batch_size], out)
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
    from .nn import SimpleConvNet, predict_classes

    params = Path(args.params)
    if not params.is_file():
        raise FileNotFoundError(f"--params: no such file {params}")
    _, (x_test, t_test) = _load(args.dataset, args.data_dir)
    net = SimpleConvNet()
    net.load_params(params)
    pred = predict_classes(net, x_test)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (t_test, pred), 1)
    acc = np.trace(confusion) / len(t_test)
    print(f"test accuracy {acc:.4f} ({int(np.trace(confusion))}/{len(t_test)}) on {args.dataset}")
    print("confusion matrix (rows: true digit, columns: predicted)")
    print("      " + "".join(f"{j:>6}" for j in range(10)))
    for i in range(10):
        print(f"{i:>6}" + "".join(f"{v:>6}" for v in confusion[i]))
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from .viz import graph_command

    graph_command(args.out, grads=args.grads, model=args.model)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit_command

    return audit_command()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinygrad-cnn", description="Train, evaluate and inspect the book's SimpleConvNet."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train SimpleConvNet (default: the bundled mini MNIST)")
    p.add_argument(
        "--dataset",
        choices=["mini", "mnist"],
        default="mini",
        help="mini: bundled 10k/2k subset (offline); mnist: the full set via load_mnist",
    )
    p.add_argument("--data-dir", help="folder with the MNIST IDX files (for --dataset mnist)")
    p.add_argument("--epochs", type=_positive, default=20)
    p.add_argument("--batch-size", type=_positive, default=100)
    p.add_argument("--optimizer", type=str.lower, choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=_positive_float, default=0.001)
    p.add_argument(
        "--init",
        default="he",
        help="weight init: he (default), xavier, or a std such as the book's 0.01",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/simpleconvnet", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--quiet", action="store_true", help="no progress bar (per-epoch lines stay)")
    p.add_argument("--limit", type=_positive, help="train on the first N images (quick trials)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy and confusion matrix of saved params")
    p.add_argument("--params", required=True, help="params.npz (or the book's params.pkl)")
    p.add_argument("--dataset", choices=["mini", "mnist"], default="mini")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("graph", help="render the SimpleConvNet loss graph")
    p.add_argument("--model", choices=["simpleconvnet"], default="simpleconvnet")
    p.add_argument("--grads", action="store_true", help="annotate gradient norms")
    p.add_argument("--out", default="graph.svg", help=".svg, .png, .pdf or .dot")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("audit", help="check every op's backward in a SimpleConvNet graph")
    p.set_defaults(func=cmd_audit)
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `tinygrad-cnn evaluate ... | head`: the reader left
        sys.stderr.close()
        return 141
    except KeyboardInterrupt:
        print("tinygrad-cnn: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as e:
        msg = str(e).strip().replace("\n", " ")
        print(f"tinygrad-cnn: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
