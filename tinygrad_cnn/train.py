"""The book's ``Trainer``, made correct: one evaluation per epoch, seeded, resumable."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import parallel
from .data import BatchIterator
from .io import load_npz, save_npz
from .nn import Module, predict_classes
from .optim import Optimizer, get_optimizer


def evaluate_accuracy(net: Module, x: np.ndarray, t: np.ndarray, batch_size: int = 500) -> float:
    """Fraction of correct predictions over every sample of ``x`` (N, C, H, W)."""
    labels = t.argmax(axis=1) if t.ndim == 2 else t
    return float(np.mean(predict_classes(net, x, batch_size) == labels))


class Trainer:
    """Train a network with mini-batches; the book's interface.

    Parameters
    ----------
    network : Module
        Must provide ``loss(x, t)`` returning a scalar Tensor (``SimpleConvNet`` does).
    x_train, t_train, x_test, t_test : ndarray
        Images (N, C, H, W) float32 and labels (N,) or one-hot (N, K).
    epochs, mini_batch_size : int
    optimizer : str
        One of SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam (case-insensitive).
    optimizer_param : dict
        Keyword arguments of the optimizer, e.g. ``{'lr': 0.001}``.
    evaluate_sample_num_per_epoch : int, optional
        Evaluate train/test accuracy on the first this-many samples each epoch (all if None).
    verbose : bool
        Print one line per epoch.
    progress : bool, optional
        Show a progress bar with loss and throughput (default: same as ``verbose``).
    seed : int, optional
        Seeds the batch order; with a seeded network the run is fully reproducible.
    checkpoint : path, optional
        Written atomically after every epoch; ``resume()`` continues from it.
    threads : int, optional
        Threads the hot ops split their work across during ``train()`` (see
        ``tinygrad_cnn.parallel.threads``); default: as many as NumPy's BLAS uses.
    """

    def __init__(
        self,
        network: Module,
        x_train: np.ndarray,
        t_train: np.ndarray,
        x_test: np.ndarray,
        t_test: np.ndarray,
        epochs: int = 20,
        mini_batch_size: int = 100,
        optimizer: str = "Adam",
        optimizer_param: dict[str, Any] | None = None,
        evaluate_sample_num_per_epoch: int | None = None,
        verbose: bool = True,
        progress: bool | None = None,
        seed: int | None = None,
        checkpoint: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        if epochs < 1 or mini_batch_size < 1:
            raise ValueError(f"Trainer: epochs ({epochs}) and batch size must be >= 1")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"Trainer: threads must be a positive int or None, got {threads!r}")
        self.network = network
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs = epochs
        self.optimizer: Optimizer = get_optimizer(
            optimizer, network.parameters(), **(optimizer_param or {"lr": 0.001})
        )
        self.batches = BatchIterator(x_train, t_train, batch_size=mini_batch_size, seed=seed)
        self.eval_num = evaluate_sample_num_per_epoch
        self.verbose = verbose
        self.progress = verbose if progress is None else progress
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.threads = threads
        self.epoch = 0  # epochs completed
        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        self.epoch_seconds: list[float] = []

    # ------------------------------------------------------------------ steps
    def train_step(self, x: np.ndarray, t: np.ndarray) -> float:
        """One update on a batch; returns the batch loss."""
        self.optimizer.zero_grad()
        loss = self.network.loss(x, t)
        loss.backward()
        self.optimizer.step()
        return float(loss.data)

    def evaluate(self) -> tuple[float, float]:
        """(train accuracy, test accuracy), on the first ``evaluate_sample_num_per_epoch``."""
        n = self.eval_num
        xtr, ttr = (
            (self.x_train, self.t_train) if n is None else (self.x_train[:n], self.t_train[:n])
        )
        xte, tte = (self.x_test, self.t_test) if n is None else (self.x_test[:n], self.t_test[:n])
        return evaluate_accuracy(self.network, xtr, ttr), evaluate_accuracy(self.network, xte, tte)

    def train(self) -> dict[str, list[float]]:
        """Run the remaining epochs; return the history."""
        with parallel.threads(self.threads):
            while self.epoch < self.epochs:
                self._train_epoch()
        return self.history

    def _train_epoch(self) -> None:
        """One pass over the training set, then the evaluation and the checkpoint."""
        from tqdm.auto import tqdm

        start = time.perf_counter()
        bar = tqdm(
            total=len(self.batches),
            desc=f"epoch {self.epoch + 1}/{self.epochs}",
            unit="batch",
            disable=not self.progress,
            leave=False,
        )
        seen, losses = 0, []
        for x, t in self.batches:
            losses.append(self.train_step(x, t))
            seen += len(x)
            bar.update(1)
            if bar.n % 10 == 0 or bar.n == bar.total:
                rate = seen / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", img_s=f"{rate:,.0f}", refresh=False)
        bar.close()
        self.train_loss_list.extend(losses)
        train_acc, test_acc = self.evaluate()
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        self.epoch_seconds.append(time.perf_counter() - start)
        self.epoch += 1
        if self.verbose:
            print(
                f"epoch {self.epoch:>2}/{self.epochs}  loss {np.mean(losses):.4f}  "
                f"train acc {train_acc:.4f}  test acc {test_acc:.4f}  "
                f"({self.epoch_seconds[-1]:.1f} s)",
                flush=True,
            )
        if self.checkpoint is not None:
            self.save_checkpoint(self.checkpoint)

    @property
    def history(self) -> dict[str, list[float]]:
        return {
            "train_loss": self.train_loss_list,
            "train_acc": self.train_acc_list,
            "test_acc": self.test_acc_list,
            "epoch_seconds": self.epoch_seconds,
        }

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | Path) -> None:
        """Parameters, optimizer state, epoch, history and batch RNG state, atomically."""
        arrays: dict[str, Any] = {f"param/{k}": v for k, v in self.network.state_dict().items()}
        for key, value in self.optimizer.state_dict().items():
            arrays[f"optim/{key}"] = np.asarray(value)
        meta = {"epoch": self.epoch, "history": self.history, "batches": self.batches.state_dict()}
        arrays["meta"] = np.array(json.dumps(meta))
        save_npz(path, arrays)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything ``save_checkpoint`` wrote; training then continues exactly."""
        arrays = load_npz(path)
        if "meta" not in arrays:
            raise ValueError(f"{path}: not a tinygrad_cnn checkpoint (no 'meta' entry)")
        try:
            meta = json.loads(str(arrays["meta"]))
            epoch, hist, batches = int(meta["epoch"]), meta["history"], meta["batches"]
            hist = {
                k: list(hist[k]) for k in ("train_loss", "train_acc", "test_acc", "epoch_seconds")
            }
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: damaged checkpoint metadata ({e!r})") from None
        params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
        optim = {k[6:]: _scalar(v) for k, v in arrays.items() if k.startswith("optim/")}
        # restore into copies first, so a mismatch leaves the live objects untouched
        saved_params, saved_optim = self.network.state_dict(), self.optimizer.state_dict()
        try:
            self.network.load_state_dict(params)
            self.optimizer.load_state_dict(optim)
        except ValueError as e:
            self.network.load_state_dict(saved_params)
            self.optimizer.load_state_dict(saved_optim)
            raise ValueError(
                f"{path} does not fit this network and {type(self.optimizer).__name__} "
                f"optimizer (resume with the same options it was trained with): {e}"
            ) from None
        self.batches.load_state_dict(batches)
        self.epoch = epoch
        self.train_loss_list, self.train_acc_list = hist["train_loss"], hist["train_acc"]
        self.test_acc_list, self.epoch_seconds = hist["test_acc"], hist["epoch_seconds"]


def _scalar(v: np.ndarray) -> Any:
    """0-d arrays back to Python numbers (the optimizer stores step counts and rates so)."""
    return v.item() if v.ndim == 0 else v
