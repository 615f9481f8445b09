"""The command line: ``tinygrad-cnn train|evaluate|plot|graph|audit|check`` (``python -m ...``).

The parser, ``main`` and the small commands live here; ``train``, ``plot`` and ``check`` live in
``cli_train``, ``cli_plot`` and ``cli_check``, what they share in ``cli_common``.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

import numpy as np

from .cli_check import _shape, cmd_check
from .cli_common import (
    MODELS,
    OPTIMIZERS,
    _init,
    _load,
    _load_params,
    _model_of_params,
    _network,
    _non_negative,
    _option_error,
    _path,
    _positive,
    _positive_float,
)
from .cli_plot import INIT_PARAMS, cmd_plot
from .cli_train import DEFAULT_EPOCHS, cmd_train


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
