"""The book's ``Trainer``, made correct: one evaluation per epoch, seeded, resumable."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import parallel
from .data import BatchIterator
from .io import check_state_dict, load_npz, npz_info, save_npz
from .models import accuracy as evaluate_accuracy
from .monitor import Monitor
from .nn import Module
from .optim import Optimizer, get_optimizer

__all__ = ["Trainer", "TrainingDivergedError", "evaluate_accuracy", "checkpoint_config"]

_HISTORY = ("train_loss", "train_acc", "test_acc", "epoch_seconds")
_MAX_META_CHARS = 64 << 20


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; ``step`` and ``parameter`` say where it was noticed."""

    def __init__(self, message: str, step: int, parameter: str | None) -> None:
        super().__init__(message)
        self.step, self.parameter = step, parameter


def _first_non_finite(network: Module) -> str | None:
    """Name of the first parameter (in registration order) holding NaN or Inf, else None."""
    for name, p in network.named_parameters():
        if not np.isfinite(p.data).all():
            return name
    return None


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
        Written atomically after every epoch; ``load_checkpoint()`` continues from it.
    threads : int, optional
        Threads the hot ops split their work across during ``train()`` (see
        ``tinygrad_cnn.parallel.threads``); default: as many as NumPy's BLAS uses.
    monitor : bool, int or Monitor, optional
        Record per-layer statistics (``tinygrad_cnn.monitor``) into ``history["monitor"]``:
        True every 50 steps, an int every that many steps, or a ``Monitor`` of your own.
        Off (None or False) costs nothing; on, only the recorded steps do extra work.
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
        monitor: bool | int | Monitor | None = None,
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
        self.monitor = _as_monitor(monitor)
        # the monitor appends to this very list; a checkpoint's records are loaded into it
        self.monitor_records: list[dict[str, Any]] = (
            self.monitor.records if self.monitor is not None else []
        )
        self.seed = seed if isinstance(seed, int) else None
        self.epoch = 0  # epochs completed
        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        self.epoch_seconds: list[float] = []

    # ------------------------------------------------------------------ steps
    def train_step(self, x: np.ndarray, t: np.ndarray) -> float:
        """One update on a batch; returns the batch loss.

        With a monitor, steps it is due for (numbered by ``optimizer.step_count`` before the
        step, so ``record["step"]`` indexes ``history["train_loss"]``) are recorded.

        Raises
        ------
        TrainingDivergedError
            The loss is NaN or infinite; no update is applied.
        """
        if self.monitor is None:
            return self._update(x, t)
        with self.monitor.watch(self.network, self.optimizer.step_count):
            return self._update(x, t)

    def _update(self, x: np.ndarray, t: np.ndarray) -> float:
        self.optimizer.zero_grad()
        loss = self.network.loss(x, t)
        value = float(loss.data)
        if not math.isfinite(value):  # a scalar check: the parameters only when it fails
            step = self.optimizer.step_count + 1
            bad = _first_non_finite(self.network)
            where = (
                f"parameter {bad!r} is the first to hold NaN/Inf"
                if bad
                else "every parameter is finite, so the loss itself overflowed"
            )
            raise TrainingDivergedError(
                f"Trainer: the loss became {value} at step {step} (epoch {self.epoch + 1}); "
                f"{where}. Training stopped; lower the learning rate or the init scale",
                step,
                bad,
            )
        loss.backward()
        self.optimizer.step()
        return value

    def evaluate(self) -> tuple[float, float]:
        """(train accuracy, test accuracy), on the first ``evaluate_sample_num_per_epoch``."""
        n = self.eval_num
        xtr, ttr = (
            (self.x_train, self.t_train) if n is None else (self.x_train[:n], self.t_train[:n])
        )
        xte, tte = (self.x_test, self.t_test) if n is None else (self.x_test[:n], self.t_test[:n])
        return evaluate_accuracy(self.network, xtr, ttr), evaluate_accuracy(self.network, xte, tte)

    def train(self) -> dict[str, list[Any]]:
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
        try:
            for x, t in self.batches:
                losses.append(self.train_step(x, t))
                seen += len(x)
                bar.update(1)
                if bar.n % 10 == 0 or bar.n == bar.total:
                    rate = seen / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(loss=f"{losses[-1]:.4f}", img_s=f"{rate:,.0f}", refresh=False)
        finally:
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
    def history(self) -> dict[str, list[Any]]:
        """Per-step losses, per-epoch accuracies and times; ``"monitor"`` records if any."""
        history: dict[str, list[Any]] = {
            "train_loss": self.train_loss_list,
            "train_acc": self.train_acc_list,
            "test_acc": self.test_acc_list,
            "epoch_seconds": self.epoch_seconds,
        }
        if self.monitor is not None or self.monitor_records:
            history["monitor"] = self.monitor_records
        return history

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | Path) -> None:
        """Parameters, optimizer state, epoch, history and batch RNG state, atomically.

        Refuses (``TrainingDivergedError``) when a parameter holds NaN or Inf, so the last
        good checkpoint is never replaced by a diverged one.
        """
        bad = _first_non_finite(self.network)
        if bad is not None:
            step = self.optimizer.step_count
            raise TrainingDivergedError(
                f"Trainer: parameter {bad!r} holds NaN/Inf after step {step}; "
                f"not overwriting the checkpoint {path}",
                step,
                bad,
            )
        arrays: dict[str, Any] = {f"param/{k}": v for k, v in self.network.state_dict().items()}
        for key, value in self.optimizer.state_dict().items():
            arrays[f"optim/{key}"] = np.asarray(value)
        meta = {
            "epoch": self.epoch,
            "epochs": self.epochs,  # the run's target: a resume without --epochs keeps it
            "history": self.history,
            "batches": self.batches.state_dict(),
            "config": self.config,
            "seed": self.seed,
            # dropout masks: a resumed run draws the ones the uninterrupted run would have
            "rngs": {k: g.bit_generator.state for k, g in _module_rngs(self.network).items()},
        }
        arrays["meta"] = np.array(json.dumps(meta))
        save_npz(path, arrays)

    @property
    def config(self) -> dict[str, Any]:
        """What a checkpoint must agree on to resume: optimizer, batch size, training set size."""
        return {
            "optimizer": type(self.optimizer).__name__.lower(),
            "batch_size": self.batches.batch_size,
            "n_train": len(self.x_train),
        }

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything ``save_checkpoint`` wrote; training then continues exactly.

        All or nothing: the file's names and shapes (from the headers), its metadata, the
        parameters and the optimizer state are all checked before anything changes.
        """
        info = npz_info(path)
        if "meta" not in info:
            raise ValueError(f"{path}: not a tinygrad_cnn checkpoint (no 'meta' entry)")
        shape, dtype = info["meta"]
        if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * _MAX_META_CHARS:
            raise ValueError(f"{path}: damaged checkpoint metadata ('meta' is {shape} {dtype})")
        net_params = self.network.state_arrays()  # parameters and buffers
        want = {f"param/{k}": a.shape for k, a in net_params.items()}
        want.update((f"optim/{k}", np.shape(v)) for k, v in self.optimizer.state_dict().items())
        want["meta"] = ()
        if set(info) != set(want) or any(info[k][0] != s for k, s in want.items()):
            bad = sorted(set(info) ^ set(want)) or [k for k, s in want.items() if info[k][0] != s]
            if all(k.startswith("optim/") for k in bad):
                theirs = sorted(k[6:] for k in info if k.startswith("optim/") and "." not in k)
                raise ValueError(
                    f"{path} holds the state of another optimizer (hyperparameters {theirs}), "
                    f"not of this Trainer's {type(self.optimizer).__name__}; resume with the "
                    "optimizer it was trained with"
                )
            raise ValueError(
                f"{path} does not fit this network and {type(self.optimizer).__name__} "
                f"optimizer (resume with the same options it was trained with): "
                f"entry {bad[0]!r} differs"
            )
        arrays = load_npz(path, expected=want)
        epoch, hist, batches = _parse_meta(path, str(arrays["meta"]), self.config)
        params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
        optim = {k[6:]: _scalar(v) for k, v in arrays.items() if k.startswith("optim/")}
        params = check_state_dict(net_params, params, who=f"load_checkpoint({path})")
        rng_states = _parse_rngs(path, str(arrays["meta"]), _module_rngs(self.network))
        saved_optim, saved_batches = self.optimizer.state_dict(), self.batches.state_dict()
        try:  # each validates before it changes anything; undo the first if the second fails
            self.optimizer.load_state_dict(optim)
            self.batches.load_state_dict(batches)
        except (ValueError, TypeError) as e:
            self.optimizer.load_state_dict(saved_optim)
            self.batches.load_state_dict(saved_batches)
            raise ValueError(
                f"{path} does not fit this network and {type(self.optimizer).__name__} "
                f"optimizer (resume with the same options it was trained with): {e}"
            ) from None
        self.network.load_state_dict(params)  # checked above: cannot fail
        for name, state in rng_states.items():  # checked above: cannot fail
            _module_rngs(self.network)[name].bit_generator.state = state
        self.epoch = epoch
        self.train_loss_list, self.train_acc_list = hist["train_loss"], hist["train_acc"]
        self.test_acc_list, self.epoch_seconds = hist["test_acc"], hist["epoch_seconds"]
        self.monitor_records[:] = hist.get("monitor", [])  # in place: the monitor's own list


def _module_rngs(network: Module) -> dict[str, np.random.Generator]:
    """The random generators of a network's modules (Dropout's masks), by module name."""
    return {
        name: m.rng
        for name, m in network.named_modules()
        if isinstance(getattr(m, "rng", None), np.random.Generator)
    }


def _parse_rngs(
    path: str | Path, text: str, rngs: dict[str, np.random.Generator]
) -> dict[str, dict]:
    """The saved generator states of ``rngs``' modules, each checked on a scratch generator.
    Checkpoints of earlier versions hold none: the generators are then left as they are."""
    saved = json.loads(text).get("rngs")
    if saved is None:
        return {}
    if not isinstance(saved, dict) or set(saved) != set(rngs):
        raise ValueError(
            f"{path}: damaged checkpoint metadata ('rngs' must hold the generator state of "
            f"the modules {sorted(rngs)})"
        )
    for name, state in saved.items():
        scratch = np.random.Generator(type(rngs[name].bit_generator)())
        try:
            scratch.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(
                f"{path}: damaged checkpoint metadata (generator state of {name!r}: {e})"
            ) from None
    return saved


def _parse_meta(path: str | Path, text: str, config: dict[str, Any]) -> tuple[int, dict, dict]:
    """Validate a checkpoint's metadata: (epoch, history lists, batch iterator state)."""

    def damaged(why: str) -> ValueError:
        return ValueError(f"{path}: damaged checkpoint metadata ({why})")

    try:
        meta = json.loads(text)
    except ValueError as e:
        raise damaged(f"not JSON: {e}") from None
    if not isinstance(meta, dict) or not {"epoch", "history", "batches"} <= set(meta):
        raise damaged("needs 'epoch', 'history' and 'batches'")
    epoch, hist, batches = meta["epoch"], meta["history"], meta["batches"]
    if type(epoch) is not int or epoch < 0:
        raise damaged(f"epoch must be a non-negative int, got {epoch!r}")
    if not isinstance(hist, dict) or not all(isinstance(hist.get(k), list) for k in _HISTORY):
        raise damaged(f"history must hold the lists {', '.join(_HISTORY)}")
    for key in _HISTORY:
        if not all(type(v) in (int, float) for v in hist[key]):
            raise damaged(f"history {key!r} must hold numbers")
        if key != "train_loss" and len(hist[key]) != epoch:
            raise damaged(f"history {key!r} has {len(hist[key])} entries for {epoch} epochs")
    if not isinstance(batches, dict) or not isinstance(batches.get("bit_generator"), dict):
        raise damaged("'batches' must hold the batch order's generator state")
    saved = meta.get("config")  # absent in checkpoints of earlier versions
    if saved is not None:
        if not isinstance(saved, dict):
            raise damaged("'config' must be a dict")
        for key, value in config.items():
            if key in saved and saved[key] != value:
                raise ValueError(
                    f"{path} was trained with {key.replace('_', ' ')} {saved[key]!r}, this run "
                    f"uses {value!r}; resume with the same options it was trained with"
                )
    parsed = {k: list(hist[k]) for k in _HISTORY}
    if "monitor" in hist:  # absent without a monitor and in checkpoints of earlier versions
        records = hist["monitor"]
        if not isinstance(records, list) or not all(
            isinstance(r, dict) and type(r.get("step")) is int for r in records
        ):
            raise damaged("history 'monitor' must be a list of records with an int 'step'")
        parsed["monitor"] = records
    return epoch, parsed, batches


def checkpoint_config(path: str | Path) -> dict[str, Any]:
    """What a checkpoint was trained with: its ``config`` plus ``lr``, ``seed``, ``epoch`` (done)
    and ``epochs`` (the run's target).

    Keys that the file does not record (checkpoints of earlier versions) are absent.
    """
    arrays = load_npz(path)
    if "meta" not in arrays:
        raise ValueError(f"{path}: not a tinygrad_cnn checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(str(arrays["meta"]))
        config = dict(meta.get("config") or {})
        config["epoch"] = int(meta["epoch"])
        if type(meta.get("epochs")) is int:  # absent in checkpoints of earlier versions
            config["epochs"] = meta["epochs"]
        if meta.get("seed") is not None:
            config["seed"] = int(meta["seed"])
        if "optim/lr" in arrays:
            config["lr"] = float(arrays["optim/lr"])
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{path}: damaged checkpoint metadata ({e!r})") from None
    return config


def _as_monitor(monitor: bool | int | Monitor | None) -> Monitor | None:
    """``Trainer(monitor=...)``: None/False off, True every 50 steps, an int every that many."""
    if monitor is None or monitor is False:
        return None
    if monitor is True:
        return Monitor(every=50)
    if isinstance(monitor, Monitor):
        return monitor
    if isinstance(monitor, int | np.integer):
        if monitor < 1:
            raise ValueError(f"Trainer: monitor must record every >= 1 steps, got {monitor}")
        return Monitor(every=int(monitor))
    raise TypeError(
        f"Trainer: monitor must be a bool, a step interval (int) or a Monitor, "
        f"got {type(monitor).__name__}"
    )


def _scalar(v: np.ndarray) -> Any:
    """0-d arrays back to Python numbers (the optimizer stores step counts and rates so)."""
    return v.item() if v.ndim == 0 else v
