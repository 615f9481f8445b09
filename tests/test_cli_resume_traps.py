"""Traps of ``tinygrad-cnn train --resume`` and friends that a README-only trial fell into.

Every run here trains on 100 bundled images (one batch an epoch) and evaluates on 50, in a
fresh current folder, with the pictures switched off (``test_cli.py`` draws them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tinygrad_cnn.cli as cli
import tinygrad_cnn.cli_plot as cli_plot
import tinygrad_cnn.cli_train as cli_train
from tinygrad_cnn import io as tio
from tinygrad_cnn.cli import main
from tinygrad_cnn.train import Trainer


@pytest.fixture(autouse=True)
def tiny_runs(tmp_path, monkeypatch):
    """Tiny data, no pictures, and ``tmp_path`` as the current folder (so runs/ is its own)."""
    from tinygrad_cnn.data import load_mnist_mini

    (x, t), (xt, tt) = load_mnist_mini()
    tiny = ((x[:100], t[:100]), (xt[:50], tt[:50]))
    for module in (cli, cli_plot, cli_train):  # evaluate, plot, train
        monkeypatch.setattr(module, "_load", lambda dataset, data_dir: tiny)
    for drawing in ("_plot_accuracy", "_plot_pictures", "_graph"):
        monkeypatch.setattr(cli_train, drawing, lambda *args: [])
    monkeypatch.chdir(tmp_path)


def interrupt_in_epoch(monkeypatch, epoch: int) -> None:
    """Make the next run raise KeyboardInterrupt (Ctrl-C) as epoch ``epoch`` starts."""
    real = Trainer._train_epoch

    def train_epoch(self):
        if self.epoch + 1 == epoch:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def epochs_in(folder: Path) -> int:
    return len(json.loads((folder / "history.json").read_text())["test_acc"])


TRAIN = ["train", "--quiet", "--limit", "100"]
DEEP = ["--model", "deepconvnet", "--batch-size", "50"]


# ------------------------------------------------------------------ 1. which run --resume continues
def test_bare_resume_continues_the_one_default_run_of_any_model(monkeypatch, capsys):
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 2)
        assert main([*TRAIN, *DEEP, "--epochs", "3"]) == 130
    capsys.readouterr()
    assert main([*TRAIN, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "continuing runs/deepconvnet, the only default folder with a checkpoint" in out
    assert "training DeepConvNet" in out and "after epoch 1" in out
    assert epochs_in(Path("runs/deepconvnet")) == 3 and not Path("runs/simpleconvnet").exists()


def test_bare_resume_prefers_the_one_unfinished_run(monkeypatch, capsys):
    """The trial's case: a finished SimpleConvNet run beside an interrupted DeepConvNet one."""
    assert main([*TRAIN, "--epochs", "2"]) == 0
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 2)
        assert main([*TRAIN, *DEEP, "--epochs", "3"]) == 130
    finished = files(Path("runs/simpleconvnet"))
    capsys.readouterr()
    assert main([*TRAIN, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "continuing runs/deepconvnet, the only unfinished run in a default folder" in out
    assert epochs_in(Path("runs/deepconvnet")) == 3
    assert files(Path("runs/simpleconvnet")) == finished


def test_bare_resume_with_several_unfinished_runs_lists_them_and_changes_nothing(monkeypatch,
                                                                               capsys):  # fmt: skip
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 2)
        assert main([*TRAIN, "--epochs", "2"]) == 130
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 2)
        assert main([*TRAIN, *DEEP, "--epochs", "3"]) == 130
    before = {f: files(Path("runs", f)) for f in ("simpleconvnet", "deepconvnet")}
    capsys.readouterr()
    assert main([*TRAIN, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "more than one run to continue" in err
    assert "runs/simpleconvnet (SimpleConvNet, epoch 1 of 2)" in err
    assert "runs/deepconvnet (DeepConvNet, epoch 1 of 3)" in err
    assert "--out DIR" in err and "--model MODEL" in err
    assert {f: files(Path("runs", f)) for f in before} == before
    assert main([*TRAIN, "--resume", "--model", "deepconvnet"]) == 0  # the choice made
    assert epochs_in(Path("runs/deepconvnet")) == 3


def test_bare_resume_without_any_checkpoint_names_every_place_it_looked(capsys):
    assert main([*TRAIN, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at runs/simpleconvnet/checkpoint.npz or " in err
    assert "runs/deepconvnet/checkpoint.npz" in err


# ------------------------------------------------------------------ 2. nothing left to train
def test_a_run_already_at_its_epochs_is_refused_without_rewriting_a_file(capsys):
    out = ["--out", "runs/x"]
    assert main([*TRAIN, *out, "--epochs", "2"]) == 0
    before = files(Path("runs/x"))
    capsys.readouterr()
    cases = [(["--epochs", "1"], "runs/x holds a run trained for 2 epochs; --epochs 1 leaves "
                                 "nothing to train: pass a larger --epochs to continue it"),
             (["--epochs", "2"], "--epochs 2 leaves nothing to train"),
             ([], "runs/x holds a finished run: 2 of its 2 epochs trained")]  # fmt: skip
    for epochs, words in cases:
        assert main([*TRAIN, *out, "--resume", *epochs]) == 2
        err = capsys.readouterr().err
        assert words in err and "runs/x" in err, err
        assert files(Path("runs/x")) == before
    assert main([*TRAIN, *out, "--resume", "--epochs", "3"]) == 0
    assert epochs_in(Path("runs/x")) == 3


# ------------------------------------------------------------------ 3. --resume keeps --epochs
def test_resume_keeps_the_epochs_the_run_was_started_with(monkeypatch, capsys):
    out = ["--out", "run"]
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 3)
        assert main([*TRAIN, *out, "--epochs", "4"]) == 130
    capsys.readouterr()
    assert main([*TRAIN, *out, "--resume"]) == 0
    text = capsys.readouterr().out
    assert ", 4 epochs," in text and "after 4 epochs" in text
    assert epochs_in(Path("run")) == 4
    assert main([*TRAIN, *out, "--resume", "--epochs", "5"]) == 0  # an explicit --epochs wins
    assert epochs_in(Path("run")) == 5
    assert main([*TRAIN, *out, "--resume"]) == 2  # and is the run's target from then on
    assert "a finished run: 5 of its 5 epochs" in capsys.readouterr().err


def test_a_checkpoint_without_its_epochs_resumes_to_the_default_and_says_so(capsys):
    assert main([*TRAIN, "--out", "run", "--epochs", "1"]) == 0
    arrays = tio.load_npz("run/checkpoint.npz")  # as an earlier version wrote it
    meta = json.loads(str(arrays["meta"]))
    assert meta.pop("epochs") == 1
    arrays["meta"] = np.array(json.dumps(meta))
    tio.save_npz("run/checkpoint.npz", arrays)
    capsys.readouterr()
    assert main([*TRAIN, "--out", "run", "--resume"]) == 0
    text = capsys.readouterr().out
    assert "does not record the --epochs it was started with: training to 20, the default" in text
    assert epochs_in(Path("run")) == 20


# ------------------------------------------------------------------ 4. Ctrl-C
def test_ctrl_c_says_what_was_saved_and_the_command_that_continues(monkeypatch, capsys):
    with monkeypatch.context() as m:
        interrupt_in_epoch(m, 3)
        assert main([*TRAIN, "--out", "runs/x", "--epochs", "4"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == (
        "tinygrad-cnn: interrupted in epoch 3 of 4; runs/x/checkpoint.npz holds epoch 2; "
        "continue with: tinygrad-cnn train --out runs/x --resume"
    )
    assert main([*TRAIN, "--out", "runs/x", "--resume"]) == 0  # the advice works as printed
    assert epochs_in(Path("runs/x")) == 4


def test_ctrl_c_before_any_checkpoint_says_nothing_was_saved(monkeypatch, capsys):
    interrupt_in_epoch(monkeypatch, 1)
    assert main([*TRAIN, "--out", "run with space", "--epochs", "2"]) == 130
    err = capsys.readouterr().err
    assert "interrupted in epoch 1 of 2; no checkpoint was written yet, so nothing was saved" in err
    assert "--resume" not in err and not Path("run with space/checkpoint.npz").exists()


def test_ctrl_c_while_saving_names_the_epoch_the_file_really_holds(monkeypatch, capsys):
    real = Trainer.save_checkpoint

    def save(self, path):
        if self.epoch == 2:
            raise KeyboardInterrupt
        real(self, path)

    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    assert main([*TRAIN, "--out", "run x", "--epochs", "3"]) == 130
    err = capsys.readouterr().err
    assert "while saving epoch 2 of 3; run x/checkpoint.npz holds epoch 1" in err
    assert "tinygrad-cnn train --out 'run x' --resume" in err  # quoted for the shell


# ------------------------------------------------------------------ 5. a new run never mixes
def test_a_new_run_into_a_folder_with_a_run_is_refused_and_overwrite_replaces_it(capsys):
    run = Path("run")
    assert main([*TRAIN, "--out", "run", "--epochs", "2"]) == 0
    for name in ("filters.png", "graph.svg"):  # pictures of the old run (switched off here)
        (run / name).write_bytes(b"old")
    (run / "notes.txt").write_text("mine")  # not train's: never touched
    before = files(run)
    capsys.readouterr()
    for extra in ([], ["--epochs", "5", "--seed", "3"]):
        assert main([*TRAIN, "--out", "run", *extra]) == 2
        err = capsys.readouterr().err
        assert "--out: run already holds a run (checkpoint.npz, params.npz: SimpleConvNet, " \
               "epoch 2 of 2, finished)" in err  # fmt: skip
        assert "--resume" in err and "--out DIR" in err and "--overwrite" in err
        assert files(run) == before
    assert main([*TRAIN, "--out", "run", "--epochs", "1", "--overwrite"]) == 0
    assert "removed the earlier run's" in capsys.readouterr().out
    assert sorted(files(run)) == ["checkpoint.npz", "history.json", "init_params.npz",
                                  "notes.txt", "params.npz"]  # fmt: skip
    assert (run / "notes.txt").read_text() == "mine" and epochs_in(run) == 1
    assert main([*TRAIN, "--out", "run", "--resume", "--overwrite"]) == 2
    assert "pass one of them" in capsys.readouterr().err


def test_a_folder_without_a_run_takes_a_new_one(capsys):
    Path("run").mkdir()
    (Path("run") / "notes.txt").write_text("mine")
    assert main([*TRAIN, "--out", "run", "--epochs", "1"]) == 0
    assert (Path("run") / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ 6. the model of a params file
def test_commands_take_the_model_from_the_params_file_unless_told(capsys):
    from tinygrad_cnn.models import DeepConvNet

    DeepConvNet(seed=0).save_params("deep.npz")
    DeepConvNet(seed=0, batch_norm=True).save_params("bn.npz")
    assert main(["evaluate", "--params", "deep.npz"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["plot", "confusion", "--params", "bn.npz", "--out", "c.svg"]) == 0
    assert Path("c.svg").is_file()
    capsys.readouterr()
    assert main(["graph", "--params", "bn.npz", "--out", "g.dot"]) == 0
    assert "loss graph of DeepConvNet with batch norm (bn.npz)" in capsys.readouterr().out
    assert main(["evaluate", "--params", "bn.npz", "--batch-norm"]) == 0  # agrees: fine
    capsys.readouterr()
    cases = [(["--model", "simpleconvnet"], "not SimpleConvNet's: pass --model deepconvnet"),
             (["--batch-norm"], "pass --model deepconvnet without --batch-norm")]  # fmt: skip
    for flags, words in cases:  # what the command line says still wins, with the advice
        assert main(["evaluate", "--params", "deep.npz", *flags]) == 2
        assert words in capsys.readouterr().err


def test_help_describes_the_new_behaviour(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--overwrite" in text and "with --resume, the checkpoint's" in text
    assert "the one runs/MODEL folder that holds a checkpoint" in text
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "the one --params holds" in " ".join(capsys.readouterr().out.split())


def test_the_default_folder_is_named_as_the_default_when_it_holds_a_run(capsys):
    assert main([*TRAIN, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*TRAIN, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "runs/simpleconvnet (the default --out) already holds a run" in err
    assert "--out: runs" not in err
