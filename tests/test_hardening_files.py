"""Regression tests for issue 13, items 5-13: optimizers, files, checkpoints, CLI, downloads."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest

from tinygrad_cnn import data
from tinygrad_cnn import io as tio
from tinygrad_cnn.cli import main
from tinygrad_cnn.data import MNISTNotFoundError, load_mnist, load_mnist_mini
from tinygrad_cnn.nn import SimpleConvNet
from tinygrad_cnn.optim import get_optimizer
from tinygrad_cnn.picklesafe import load_book_pickle
from tinygrad_cnn.train import Trainer, TrainingDivergedError

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]


class P:
    """A bare parameter: ``.data``, ``.grad``, ``.name``."""

    def __init__(self, data: np.ndarray, name: str = "w") -> None:
        self.data, self.grad, self.name = data, None, name


def snapshot(net: SimpleConvNet) -> dict[str, np.ndarray]:
    return {name: p.data.copy() for name, p in net.named_parameters()}


def assert_unchanged(net: SimpleConvNet, before: dict[str, np.ndarray]) -> None:
    for name, p in net.named_parameters():
        np.testing.assert_array_equal(p.data, before[name], err_msg=name)


@pytest.fixture(scope="module")
def small_data():
    (x, t), (xt, tt) = load_mnist_mini()
    return x[:200], t[:200], xt[:50], tt[:50]


# ------------------------------------------------------------------ 5. float16 parameters
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float16_parameters_update_in_float32_and_never_turn_nan(name: str) -> None:
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(64).astype(np.float16)
    g = rng.standard_normal(64).astype(np.float16)
    g[::2] = 0  # zero-gradient elements: Adam's eps underflowed to 0 and gave 0/0
    p16, p32 = P(w0.copy()), P(w0.astype(np.float32))
    opt16, opt32 = get_optimizer(name, [p16], lr=0.01), get_optimizer(name, [p32], lr=0.01)
    p16.grad, p32.grad = g.copy(), g.astype(np.float32)
    opt16.step()
    opt32.step()
    assert p16.data.dtype == np.float16
    np.testing.assert_array_equal(p16.data, p32.data.astype(np.float16))  # one rounding only
    for _ in range(5):
        opt16.step()
    assert np.isfinite(p16.data).all()
    if name != "momentum" and name != "nesterov":  # momentum keeps moving on zero gradient
        np.testing.assert_array_equal(p16.data[::2], w0[::2])
    state = opt16.state_dict()
    assert all(v.dtype == np.float32 for k, v in state.items() if isinstance(v, np.ndarray))
    opt16.load_state_dict(state)  # the float32 state round-trips


# ------------------------------------------------------------------ 6. all-or-nothing loading
def bad_entry(kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "strings":
        return np.full(shape, "abc")
    if kind == "structured":
        return np.zeros(shape, dtype=[("a", "f4"), ("b", "i4")])
    return np.ones(shape, np.complex64)


@pytest.mark.parametrize("kind", ["strings", "structured", "complex"])
def test_load_params_with_a_bad_last_entry_changes_nothing(tmp_path, kind) -> None:
    donor, net = SimpleConvNet(seed=1), SimpleConvNet(seed=2)
    state = donor.state_dict()
    last = list(state)[-1]  # the earlier entries used to be copied in before this one failed
    state[last] = bad_entry(kind, state[last].shape)
    tio.save_npz(tmp_path / "bad.npz", state)
    before = snapshot(net)
    with pytest.raises(ValueError, match=last.replace(".", r"\.")):
        net.load_params(tmp_path / "bad.npz")
    assert_unchanged(net, before)


def test_check_state_dict_validates_without_changing_anything() -> None:
    params = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}
    ok = tio.check_state_dict(params, {"w": np.ones((2, 3)), "b": np.arange(3)})
    assert ok["w"].dtype == ok["b"].dtype == np.float32 and (params["w"] == 0).all()
    with pytest.raises(ValueError, match="overflows"):
        tio.check_state_dict(params, {"w": np.full((2, 3), 1e300), "b": np.zeros(3)})
    with pytest.raises(ValueError, match=r"missing parameters \['b'\]"):
        tio.check_state_dict(params, {"w": np.ones((2, 3))})


def test_cli_gives_one_line_error_for_a_structured_params_file(tmp_path, capsys) -> None:
    state = SimpleConvNet(seed=0).state_dict()
    state["fc2.bias"] = bad_entry("structured", (10,))
    tio.save_npz(tmp_path / "bad.npz", state)
    assert main(["evaluate", "--params", str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinygrad-cnn: error:") and len(err.strip().splitlines()) == 1
    assert "fc2.bias" in err


# ------------------------------------------------------------------ 7. headers before data
def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def test_npz_header_claiming_terabytes_is_refused_before_allocating(tmp_path) -> None:
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("conv1.weight.npy", npy_header((1 << 40,)))  # 4 TiB of float32, no data
    with pytest.raises(ValueError, match="header declares shape"):
        tio.load_npz(path)
    with pytest.raises(ValueError, match="header declares shape"):
        SimpleConvNet().load_params(path)


def test_zip_bomb_with_unexpected_names_is_refused_without_reading_it(tmp_path) -> None:
    state = SimpleConvNet(seed=0).state_dict()
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, junk=np.zeros(1 << 24, np.float32), **state)  # 64 MiB, ~65 kB
    assert path.stat().st_size < 4 << 20  # the parameters (1.6 MB) + the compressed zeros
    net = SimpleConvNet(seed=1)
    before = snapshot(net)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="unexpected arrays \\['junk'\\]"):
            net.load_params(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak:,} bytes"
    assert_unchanged(net, before)


def test_npz_over_the_byte_cap_is_refused(tmp_path) -> None:
    tio.save_npz(tmp_path / "a.npz", {"x": np.zeros(1000, np.float32)})
    assert tio.npz_info(tmp_path / "a.npz") == {"x": ((1000,), np.dtype(np.float32))}
    with pytest.raises(ValueError, match="more than 3,000 bytes"):
        tio.load_npz(tmp_path / "a.npz", max_bytes=3000)
    assert tio.load_npz(tmp_path / "a.npz", max_bytes=4000)["x"].shape == (1000,)


class _Reconstructs:
    def __reduce__(self):
        return np.zeros(1).__reduce__()[0], (np.ndarray, (1 << 50,), b"b")


class _CallsNdarray:
    def __reduce__(self):
        return np.ndarray, ((1 << 50,), "b")


@pytest.mark.parametrize("payload", [_Reconstructs(), _CallsNdarray()], ids=["reconstruct", "new"])
def test_book_pickle_building_a_huge_array_is_refused_before_allocating(tmp_path, payload):
    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps({"W1": payload}, protocol=2))
    with pytest.raises(ValueError, match="need more than"):
        load_book_pickle(path)


def test_book_pickle_cap_counts_every_array(tmp_path) -> None:
    path = tmp_path / "params.pkl"
    arrays = {f"W{i}": np.zeros(1000) for i in range(4)}  # 32 kB in all
    path.write_bytes(pickle.dumps(arrays, protocol=4))
    assert set(load_book_pickle(path, max_bytes=32000)) == set(arrays)
    with pytest.raises(ValueError, match="need more than"):
        load_book_pickle(path, max_bytes=31999)


# ------------------------------------------------------------------ 8. only regular files
def test_saving_onto_a_fifo_is_refused_and_the_fifo_kept(tmp_path) -> None:
    fifo = tmp_path / "params.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="params.npz.*not a regular file.*FIFO"):
        SimpleConvNet(seed=0).save_params(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["params.npz"]


# ------------------------------------------------------------------ 9. resume options
def test_resume_with_a_new_lr_uses_it_and_says_so(tmp_path, capsys, monkeypatch) -> None:
    args = ["train", "--limit", "100", "--quiet", "--out", str(tmp_path)]
    assert main([*args, "--epochs", "1"]) == 0
    capsys.readouterr()
    from tinygrad_cnn import train as train_mod

    used = []
    real = train_mod.Trainer.train_step

    def spy(self, x, t):
        used.append(self.optimizer.lr)
        return real(self, x, t)

    monkeypatch.setattr(train_mod.Trainer, "train_step", spy)
    assert main([*args, "--epochs", "2", "--resume", "--lr", "0.5"]) == 0
    assert used and set(used) == {0.5}  # was the checkpoint's 0.001 while printing 0.5
    out = capsys.readouterr().out
    assert "lr=0.5" in out and "replaces the checkpoint's 0.001" in out


@pytest.mark.parametrize(
    "flag, value, match",
    [("--batch-size", "50", "--batch-size 50 conflicts"), ("--seed", "3", "--seed 3 conflicts"),
     ("--init", "xavier", "--init xavier does nothing")],
)  # fmt: skip
def test_resume_refuses_options_that_contradict_the_checkpoint(tmp_path, capsys, flag, value,
                                                               match):  # fmt: skip
    args = ["train", "--limit", "100", "--quiet", "--out", str(tmp_path)]
    assert main([*args, "--epochs", "1"]) == 0
    before = (tmp_path / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main([*args, "--epochs", "2", "--resume", flag, value]) == 2
    assert match in capsys.readouterr().err
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_trainer_refuses_a_checkpoint_of_another_batch_size(small_data, tmp_path) -> None:
    net = SimpleConvNet(seed=0)
    Trainer(net, *small_data, epochs=1, verbose=False, checkpoint=tmp_path / "c.npz").train()
    other = Trainer(SimpleConvNet(seed=1), *small_data, mini_batch_size=50, verbose=False)
    before = snapshot(other.network)
    with pytest.raises(ValueError, match="batch size 100, this run uses 50"):
        other.load_checkpoint(tmp_path / "c.npz")
    assert_unchanged(other.network, before)


# ------------------------------------------------------------------ 10. damaged metadata
def damage(meta: dict, how: str) -> dict:
    if how == "batches":
        meta["batches"] = {}
    elif how == "bitgen":
        meta["batches"]["bit_generator"] = {"bit_generator": "PCG64", "state": 5}
    elif how == "epoch":
        meta["epoch"] = "one"
    elif how == "history":
        meta["history"]["test_acc"] = "ab"
    elif how == "done":
        meta["batches"]["batches_done"] = -3
    return meta


@pytest.mark.parametrize("how", ["batches", "bitgen", "epoch", "history", "done"])
def test_damaged_checkpoint_metadata_changes_nothing(small_data, tmp_path, how) -> None:
    ckpt = tmp_path / "c.npz"
    Trainer(SimpleConvNet(seed=0), *small_data, epochs=1, verbose=False, checkpoint=ckpt).train()
    arrays = tio.load_npz(ckpt)
    arrays["meta"] = np.array(json.dumps(damage(json.loads(str(arrays["meta"])), how)))
    tio.save_npz(ckpt, arrays)

    trainer = Trainer(SimpleConvNet(seed=1), *small_data, epochs=2, verbose=False, seed=4)
    trainer.train_step(small_data[0][:10], small_data[1][:10])  # some optimizer state
    before, optim = snapshot(trainer.network), trainer.optimizer.state_dict()
    rng = trainer.batches.rng.bit_generator.state
    with pytest.raises(ValueError, match="c.npz"):
        trainer.load_checkpoint(ckpt)
    assert_unchanged(trainer.network, before)
    after = trainer.optimizer.state_dict()
    assert after.keys() == optim.keys()
    for key, value in optim.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert trainer.epoch == 0 and trainer.batches.rng.bit_generator.state == rng


# ------------------------------------------------------------------ 11. non-finite values
@pytest.mark.parametrize(
    "flag, value", [("--init", "inf"), ("--init", "nan"), ("--lr", "inf"), ("--lr", "nan")]
)
def test_non_finite_numeric_options_are_rejected_by_the_parser(tmp_path, capsys, flag, value):
    argv = ["train", "--epochs", "1", "--limit", "100", "--quiet", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        main([*argv, flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "finite" in err
    assert not (tmp_path / "checkpoint.npz").exists()


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(small_data, tmp_path):
    ckpt = tmp_path / "c.npz"
    trainer = Trainer(SimpleConvNet(seed=0), *small_data, epochs=3, verbose=False,
                      checkpoint=ckpt)  # fmt: skip
    trainer.epochs = 1
    trainer.train()
    good = ckpt.read_bytes()
    trainer.epochs = 3
    trainer.network.fc2.weight.data[0, 0] = np.nan
    with pytest.raises(TrainingDivergedError, match=r"step 3 .*'fc2\.weight'") as info:
        trainer.train()
    assert isinstance(info.value, RuntimeError) and info.value.parameter == "fc2.weight"
    assert ckpt.read_bytes() == good
    with pytest.raises(TrainingDivergedError, match="not overwriting"):
        trainer.save_checkpoint(ckpt)
    assert ckpt.read_bytes() == good


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_cli_exits_non_zero_when_training_diverges(tmp_path, capsys) -> None:
    args = ["train", "--limit", "100", "--quiet", "--out", str(tmp_path)]
    assert main([*args, "--epochs", "1"]) == 0
    arrays = tio.load_npz(tmp_path / "checkpoint.npz")
    arrays["param/fc1.weight"][3, 3] = np.inf  # as if a bad update had slipped in
    tio.save_npz(tmp_path / "checkpoint.npz", arrays)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main([*args, "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "step 2" in err and "fc1.weight" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


# ------------------------------------------------------------------ 12. unprintable paths
@pytest.mark.parametrize("command", ["graph", "evaluate"])
def test_non_ascii_paths_print_on_an_ascii_terminal(tmp_path, command) -> None:
    target = tmp_path / "r\u00e9sultats"
    argv = (
        ["graph", "--out", str(target / "g.dot")]
        if command == "graph"
        else ["evaluate", "--params", str(target / "missing.npz")]
    )
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    result = subprocess.run(
        [sys.executable, "-m", "tinygrad_cnn", *argv], capture_output=True, env=env, timeout=120
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    assert b"r\\xe9sultats" in result.stdout + result.stderr
    if command == "graph":
        assert result.returncode == 0 and (target / "g.dot").is_file()
    else:
        assert result.returncode == 2 and b"no such file" in result.stderr


# ------------------------------------------------------------------ 13. stale temp files
def test_stale_temp_files_of_ours_are_removed_on_the_next_save(tmp_path) -> None:
    target = tmp_path / "checkpoint.npz"
    old = time.time() - 3600
    names = {
        ".checkpoint.npz.abcd1234.tmp": (old, False),  # earlier naming, an hour old: stale
        ".checkpoint.npz.efgh5678.tmp": (None, True),  # earlier naming, fresh: may be live
        ".checkpoint.npz.999999999.abcd1234.tmp": (None, False),  # writer PID is gone
        f".checkpoint.npz.{os.getpid()}.abcd1234.tmp": (old, True),  # ours, another thread
        ".params.npz.999999999.abcd1234.tmp": (old, True),  # another target
        ".checkpoint.npz.notes": (old, True),  # not our pattern
        "checkpoint.npz.abcd1234.tmp": (old, True),  # not hidden: not ours
    }
    for name, (mtime, _) in names.items():
        (tmp_path / name).write_bytes(b"partial")
        if mtime is not None:
            os.utime(tmp_path / name, (mtime, mtime))
    tio.save_npz(target, {"x": np.arange(3)})
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"checkpoint.npz"} | {n for n, (_, keep) in names.items() if keep}


# ------------------------------------------------------------------ 13. downloads
def idx_bytes(arr: np.ndarray) -> bytes:
    magic = {1: 0x801, 3: 0x803}[arr.ndim]
    dims = b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return magic.to_bytes(4, "big") + dims + arr.astype(np.uint8).tobytes()


@pytest.fixture
def fake_gz(monkeypatch) -> dict[str, bytes]:
    """Tiny fake MNIST ``.gz`` bodies whose md5, size and sha256 are installed as official."""
    rng = np.random.default_rng(0)
    raws = [rng.integers(0, 256, (3, 28, 28)), np.arange(3) % 10] * 2
    bodies = {}
    for name, arr in zip(data.FILES, raws, strict=True):
        raw = idx_bytes(arr)
        gz = bodies[name] = gzip.compress(raw, mtime=0)
        monkeypatch.setitem(data.SHA256_PAYLOAD, name, hashlib.sha256(raw).hexdigest())
        monkeypatch.setitem(data.MD5_GZ, name, hashlib.md5(gz).hexdigest())
        monkeypatch.setitem(data.SIZE_GZ, name, len(gz))
    return bodies


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``routes[path] = (body, declared length or None, seconds between bytes)``."""

    routes: dict = {}
    sent: list = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        body, length, pause = self.routes[self.path]
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            if pause:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    self.sent.append(1)
                    time.sleep(pause)
            else:
                for i in range(0, len(body), 4096):
                    self.wfile.write(body[i : i + 4096])
                    self.sent.append(len(body[i : i + 4096]))
        except OSError:  # the client hung up, as it should
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch) -> Iterator[tuple[str, dict, list]]:
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    handler = type("Handler", (_Handler,), {"routes": {}, "sent": []})
    handler.protocol_version = "HTTP/1.0"  # without Content-Length the body ends at close
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", handler.routes, handler.sent
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-length"])
def test_download_larger_than_expected_is_cut_off(tmp_path, fake_gz, server, declared) -> None:
    base, routes, sent = server
    huge = fake_gz[data.TRAIN_IMAGES] + bytes(4 << 20)  # the file plus 4 MiB of junk
    for name, body in fake_gz.items():
        body = huge if name == data.TRAIN_IMAGES else body
        routes[f"/{name}.gz"] = (body, len(body) if declared else None, 0)
    with pytest.raises(MNISTNotFoundError, match="larger than the expected") as info:
        load_mnist(tmp_path, mirrors=[base], timeout=5)
    assert data.TRAIN_IMAGES in str(info.value)
    assert not (tmp_path / f"{data.TRAIN_IMAGES}.gz").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_slow_drip_download_meets_its_deadline(tmp_path, fake_gz, server) -> None:
    base, routes, _ = server
    for name, body in fake_gz.items():
        routes[f"/{name}.gz"] = (body, len(body), 0.02 if name == data.TRAIN_LABELS else 0)
    assert len(fake_gz[data.TRAIN_LABELS]) * 0.02 > 0.5  # the drip alone lasts > 0.5 s
    start = time.monotonic()
    with pytest.raises(MNISTNotFoundError, match="deadline") as info:
        load_mnist(tmp_path, mirrors=[base], timeout=5, deadline=0.3)
    assert time.monotonic() - start < 5
    assert data.TRAIN_LABELS in str(info.value)
    assert not (tmp_path / f"{data.TRAIN_LABELS}.gz").exists()


def test_official_sizes_sit_beside_the_checksums() -> None:
    assert set(data.SIZE_GZ) == set(data.MD5_GZ) == set(data.FILES)
    assert data.SIZE_GZ[data.TRAIN_IMAGES] == 9_912_422
