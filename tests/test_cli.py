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
    monkeypatch.chdir(tmp_path)  # the default runs/ folder: never the user's, which may hold a run
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
    assert "--optimizer adam conflicts" in err and "--optimizer sgd" in err
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert main([*args, "--epochs", "2", "--resume"]) == 0  # without the flag: the saved sgd
    assert "sgd lr=0.001" in capsys.readouterr().out


def test_graph_and_audit_commands_draw_a_trained_network(tmp_path, capsys):
    from tinygrad_cnn.nn import SimpleConvNet

    SimpleConvNet(seed=5, weight_init_std="he").save_params(tmp_path / "p.npz")
    assert (
        main(["graph", "--params", str(tmp_path / "p.npz"), "--out", str(tmp_path / "g.dot")]) == 0
    )
    text = capsys.readouterr().out
    assert "p.npz" in text and "24 nodes, 23 edges" in text
    assert (tmp_path / "g.dot").read_text().count(" -> ") == 23
    assert main(["graph", "--out", str(tmp_path / "s.dot")]) == 0
    seeded = capsys.readouterr().out
    assert "seed 0" in seeded
    assert text.rsplit("(loss", 1)[1] != seeded.rsplit("(loss", 1)[1]  # the loaded weights

    audit = ["audit", "--params", str(tmp_path / "p.npz"), "--out", str(tmp_path / "a.dot")]
    assert main(audit) == 0
    text = capsys.readouterr().out
    assert "p.npz" in text and "0 failed" in text and (tmp_path / "a.dot").is_file()
    assert main(["audit", "--params", str(tmp_path / "none.npz")]) == 2


def test_one_accuracy_function_everywhere():
    from tinygrad_cnn import models, train
    from tinygrad_cnn.data import load_mnist_mini
    from tinygrad_cnn.nn import SimpleConvNet

    assert train.evaluate_accuracy is models.accuracy
    (x, t), _ = load_mnist_mini(one_hot_label=False)
    net = SimpleConvNet(seed=0, weight_init_std="he")
    onehot = np.eye(10, dtype=np.float32)[t[:300]]
    acc = models.accuracy(net, x[:300], t[:300], batch_size=128)
    assert acc == net.accuracy(x[:300], onehot) and 0 < acc < 1
    with pytest.raises(ValueError, match="300 images"):
        models.accuracy(net, x[:300], t[:299])


def test_train_monitor_writes_its_records_and_picture(tmp_path, capsys):
    import json

    args = ["train", "--epochs", "1", "--limit", "600", "--quiet", "--out", str(tmp_path)]
    assert main([*args, "--monitor", "2"]) == 0  # 6 steps of 100 images
    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["step"] for r in history["monitor"]] == [0, 2, 4]
    assert set(history["monitor"][0]["grad_norm"]) == {
        "conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"
    }  # fmt: skip
    assert (tmp_path / "monitor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "monitor.png" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "history.json").read_text())
    assert "monitor" not in plain and not (tmp_path / "plain" / "monitor.png").exists()


def test_plot_draws_the_runs_own_initial_weights_as_train_did(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--limit", "100", "--quiet", "--out", str(out)]
    assert main([*argv, "--seed", "5", "--init", "0.01"]) == 0
    from tinygrad_cnn.models import SimpleConvNet

    start = SimpleConvNet(seed=5, weight_init_std=0.01).state_dict()
    saved = np.load(out / "init_params.npz")
    assert sorted(saved) == sorted(start)
    for name, a in start.items():
        np.testing.assert_array_equal(saved[name], a, err_msg=name)
    params, moved = out / "params.npz", tmp_path / "elsewhere.npz"
    for what in ("filters", "activations"):  # the same picture by both routes, to the byte
        assert main(["plot", what, "--params", str(params), "--out", str(tmp_path / "p.png")]) == 0
        assert (tmp_path / "p.png").read_bytes() == (out / f"{what}.png").read_bytes(), what
    (out / "init_params.npz").rename(moved)
    plot = ["plot", "filters", "--params", str(params), "--out", str(tmp_path / "f.png")]
    assert main([*plot, "--init-params", str(moved)]) == 0
    assert (tmp_path / "f.png").read_bytes() == (out / "filters.png").read_bytes()
    capsys.readouterr()
    assert main(plot) == 0  # unknown start: the trained filters alone, said so
    assert "no init_params.npz next to" in capsys.readouterr().err
    assert (tmp_path / "f.png").read_bytes() != (out / "filters.png").read_bytes()
    assert main([*plot, "--init-params", str(tmp_path / "none.npz")]) == 2
    assert "--init-params" in capsys.readouterr().err


def test_a_params_file_of_another_model_names_the_options_that_read_it(tmp_path, capsys):
    from tinygrad_cnn.models import DeepConvNet, SimpleConvNet

    files = {"simple.npz": SimpleConvNet(seed=0), "deep.npz": DeepConvNet(seed=0),
             "bn.npz": DeepConvNet(seed=0, batch_norm=True)}  # fmt: skip
    for name, net in files.items():
        net.save_params(tmp_path / name)
    DeepConvNet(seed=0).save_params(tmp_path / "deep.pkl", book=True)
    simple, refused = ["--model", "simpleconvnet"], "DeepConvNet parameters, not SimpleConvNet's"
    cases = [
        ("deep.npz", simple, f"{refused}: pass --model deepconvnet"),
        ("deep.pkl", simple, f"{refused}: pass --model deepconvnet"),
        ("bn.npz", ["--model", "deepconvnet"], "pass --model deepconvnet --batch-norm"),
        ("bn.npz", simple, "DeepConvNet (batch norm) parameters, not SimpleConvNet's"),
        ("deep.npz", ["--model", "deepconvnet", "--batch-norm"],
         "pass --model deepconvnet without --batch-norm"),
        ("simple.npz", ["--model", "deepconvnet"], "pass --model simpleconvnet"),
    ]  # fmt: skip
    for command in (["evaluate"], ["plot", "confusion"], ["graph"], ["audit"]):
        for name, flags, words in cases:
            assert main([*command, "--params", str(tmp_path / name), *flags]) == 2
            err = capsys.readouterr().err
            assert f"{tmp_path / name} holds " in err and words in err, (command, name, err)
            assert "missing arrays" not in err
    np.savez(tmp_path / "other.npz", w=np.zeros(3))  # fits no model: the loader's own words
    assert main(["evaluate", "--params", str(tmp_path / "other.npz")]) == 2
    assert "unexpected arrays ['w']" in capsys.readouterr().err


def test_batch_norm_is_kept_on_resume_and_refused_elsewhere(tmp_path, capsys, monkeypatch):
    import tinygrad_cnn.cli_train as cli_train

    for drawing in ("_plot_accuracy", "_plot_pictures", "_graph"):  # tested elsewhere; slow here
        monkeypatch.setattr(cli_train, drawing, lambda *args: [])
    out = tmp_path / "run"
    argv = ["train", "--model", "deepconvnet", "--limit", "50", "--batch-size", "50", "--quiet",
            "--out", str(out)]  # fmt: skip
    assert main([*argv, "--epochs", "1", "--batch-norm"]) == 0
    assert "training DeepConvNet (batch norm)" in capsys.readouterr().out
    assert main([*argv, "--epochs", "2", "--resume"]) == 0  # the checkpoint's batch norm
    assert "training DeepConvNet (batch norm)" in capsys.readouterr().out
    params = str(out / "params.npz")
    assert main(["evaluate", "--model", "deepconvnet", "--batch-norm", "--params", params]) == 0
    capsys.readouterr()
    resume = [a if a != "deepconvnet" else "simpleconvnet" for a in argv]
    assert main([*resume, "--epochs", "3", "--resume"]) == 2
    assert "pass --model deepconvnet --batch-norm" in capsys.readouterr().err
    no_model = [a for a in argv if a not in ("--model", "deepconvnet")]
    assert main([*no_model, "--epochs", "3", "--resume"]) == 0  # the checkpoint's network
    assert "training DeepConvNet (batch norm)" in capsys.readouterr().out
    simple = ["--model", "simpleconvnet", "--params", params]  # else the file's model is taken
    for command in (["train", "--epochs", "1"], ["evaluate", *simple],
                    ["plot", "filters", *simple], ["graph"], ["audit"]):  # fmt: skip
        assert main([*command, "--batch-norm"]) == 2
        assert "--batch-norm is an option of --model deepconvnet" in capsys.readouterr().err


COMMANDS = [["train"], ["evaluate", "--params", "p"], ["plot", "filters", "--params", "p"],
            ["graph"], ["audit"]]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_model_names_are_accepted_in_any_case(command):
    from tinygrad_cnn.cli import build_parser

    args = build_parser().parse_args([*command, "--model", "DeepConvNet"])
    assert args.model == "deepconvnet"


def test_plot_writes_the_format_out_names_or_refuses_it(tmp_path, capsys):
    from tinygrad_cnn.models import SimpleConvNet

    SimpleConvNet(seed=0).save_params(tmp_path / "p.npz")
    plot = ["plot", "confusion", "--params", str(tmp_path / "p.npz"), "--out"]
    assert main([*plot, str(tmp_path / "c.svg")]) == 0
    assert (tmp_path / "c.svg").read_bytes()[:5] == b"<?xml"
    assert main([*plot, str(tmp_path / "c.jpg")]) == 2
    err = capsys.readouterr().err
    assert "--out: " in err and "has suffix .jpg" in err and ".png, .svg or .pdf" in err
    assert not (tmp_path / "c.jpg").exists()


def test_file_errors_read_without_errno_numbers(tmp_path, capsys):
    from tinygrad_cnn.models import SimpleConvNet

    params = tmp_path / "p.npz"
    SimpleConvNet(seed=0).save_params(params)
    missing = tmp_path / "nowhere.npz"
    plot = ["plot", "filters", "--params", str(params), "--out", str(tmp_path / "f.png")]
    cases = [(["evaluate", "--params", str(missing)], "--params"),
             ([*plot, "--init-params", str(missing)], "--init-params")]  # fmt: skip
    for argv, flag in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tinygrad-cnn: error: {flag}: no such file: {missing}"), err
        assert "Errno" not in err


def test_graph_names_the_batch_norm_variant_it_drew(tmp_path, capsys):
    for flag, what in (("--html", "interactive explorer"), ("--out", "loss graph")):
        argv = ["graph", "--model", "deepconvnet", "--batch-norm", flag, str(tmp_path / "g")]
        assert main([*argv[:-1], argv[-1] + (".html" if flag == "--html" else ".svg")]) == 0
        assert f"{what} of DeepConvNet with batch norm (seed 0)" in capsys.readouterr().out
