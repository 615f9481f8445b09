"""The ``tinygrad-cnn`` command line, run in-process and once as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_cnn.cli import main


def test_train_writes_its_outputs_and_evaluate_reads_them(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--epochs", "2", "--limit", "300", "--quiet", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "epoch  1/2" in text and "epoch  2/2" in text and "final test accuracy" in text
    for name in ("params.npz", "history.json", "checkpoint.npz", "accuracy.png"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert len(history["test_acc"]) == 2
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["evaluate", "--params", str(out / "params.npz")]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and "confusion matrix" in text
    rows = [line.split() for line in text.splitlines()[-10:]]
    counts = np.array([[int(v) for v in row[1:]] for row in rows])
    assert counts.shape == (10, 10) and counts.sum() == 2000


def test_resume_continues_after_the_last_epoch(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--limit", "200", "--quiet", "--out", str(out)]
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    text = capsys.readouterr().out
    assert "resumed from" in text and "after epoch 1" in text
    assert len(json.loads((out / "history.json").read_text())["test_acc"]) == 2


@pytest.mark.parametrize(
    "argv, words",
    [
        (["evaluate", "--params", "/nonexistent/params.npz"], ["no such file"]),
        (["train", "--resume", "--out", "/nonexistent/dir"], ["no checkpoint"]),
        (["train", "--dataset", "mnist", "--data-dir", "{tmp}", "--epochs", "1"], ["MNIST"]),
        (["train", "--out", "{tmp}/file.txt"], ["not a folder"]),
        (["evaluate", "--params", "{tmp}/file.txt"], ["file.txt"]),
    ],
)
def test_bad_input_gives_a_one_line_error_without_traceback(argv, words, tmp_path, capsys,
                                                           monkeypatch):  # fmt: skip
    import tinygrad_cnn.data as data

    monkeypatch.setattr(data, "MIRRORS", [])  # never reach for the network in tests
    (tmp_path / "file.txt").write_text("not an npz")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinygrad-cnn: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    for word in words:
        assert word in err


def test_bad_arguments_are_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "0"])
    assert info.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "tinygrad_cnn", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "train" in result.stdout and "evaluate" in result.stdout


def test_resume_with_another_optimizer_names_the_mismatch(tmp_path, capsys):
    args = ["train", "--limit", "100", "--quiet", "--out", str(tmp_path)]
    assert main([*args, "--epochs", "1", "--optimizer", "sgd"]) == 0
    before = (tmp_path / "checkpoint.npz").read_bytes()
    assert main([*args, "--epochs", "2", "--optimizer", "adam", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "Adam" in err
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
