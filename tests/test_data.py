"""Tests for tinygrad_cnn.data: IDX parsing, MNIST loading and download, mini set, batches."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_cnn import data
from tinygrad_cnn.data import BatchIterator, MNISTNotFoundError, load_mnist, read_idx

FULL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
NAMES = data.FILES  # train images, train labels, test images, test labels


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array (1-d labels or 3-d images) in the IDX format."""
    magic = {1: 0x801, 3: 0x803}[arr.ndim]
    dims = b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return magic.to_bytes(4, "big") + dims + arr.astype(np.uint8).tobytes()


def fake_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10


@pytest.fixture
def fake_payloads(monkeypatch) -> dict[str, bytes]:
    """Small fake MNIST (5 train, 3 test) whose sums are installed as the official ones."""
    (xtr, ttr), (xte, tte) = fake_split(5, 0), fake_split(3, 1)
    payloads = dict(zip(NAMES, map(idx_bytes, (xtr, ttr, xte, tte)), strict=True))
    for name, raw in payloads.items():
        monkeypatch.setitem(data.SHA256_PAYLOAD, name, hashlib.sha256(raw).hexdigest())
        gz = gzip.compress(raw, mtime=0)
        monkeypatch.setitem(data.MD5_GZ, name, hashlib.md5(gz).hexdigest())
    return payloads


def write_root(root: Path, payloads: dict[str, bytes], gz: tuple[str, ...] = NAMES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, raw in payloads.items():
        if name in gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(raw, mtime=0))
        else:
            (root / name).write_bytes(raw)
    return root


# --------------------------------------------------------------------------- IDX


def test_read_idx_raw_and_gzip(tmp_path: Path) -> None:
    images, labels = fake_split(4, 0)
    for arr, name in ((images, "img"), (labels, "lbl")):
        (tmp_path / name).write_bytes(idx_bytes(arr))
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
        for path in (tmp_path / name, tmp_path / f"{name}.gz"):
            got = read_idx(path)
            assert got.dtype == np.uint8 and got.flags.writeable
            np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b"\x00\x00\x0d\x03" + b[4:], r"magic number is 0x00000d03"),
        (lambda b: b"\x00\x00\x08\x02" + b[4:], r"magic number is 0x00000802"),
        (lambda b: b[:2], "shorter than 4 bytes"),
        (lambda b: b[:10], r"truncated IDX header \(10 of 16 bytes\)"),
        (lambda b: b[:-5], r"truncated.*expected 1584 bytes, got 1579"),
        (lambda b: b + b"xyz", r"trailing bytes.*expected 1584 bytes, got 1587"),
        (lambda b: gzip.compress(b)[:-12], "corrupt gzip"),
        (lambda b: gzip.compress(b)[:-8] + b"\0\0\0\0" + gzip.compress(b)[-4:], "corrupt gzip"),
    ],
    ids=["dtype", "ndim", "tiny", "header", "truncated", "trailing", "gz-cut", "gz-crc"],
)
def test_read_idx_rejects_bad_files_naming_them(tmp_path: Path, mutate, match: str) -> None:
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(fake_split(2, 0)[0])))
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")


# --------------------------------------------------------------------------- load_mnist (fake)


def test_load_fake_root_mixed_gz_and_raw(tmp_path: Path, fake_payloads) -> None:
    root = write_root(tmp_path, fake_payloads, gz=NAMES[:2])
    (x, t), (xt, tt) = load_mnist(root, download=False)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and xt.shape == (3, 1, 28, 28)
    assert t.dtype == np.int64 and t.tolist() == [0, 1, 2, 3, 4] and tt.tolist() == [0, 1, 2]
    raw = np.frombuffer(fake_payloads[NAMES[0]], np.uint8, offset=16).reshape(5, 1, 28, 28)
    np.testing.assert_array_equal(x, raw.astype(np.float32) / np.float32(255))
    (x, t), _ = load_mnist(root, normalize=False, flatten=True, one_hot_label=True, download=False)
    assert x.shape == (5, 784) and x.dtype == np.float32 and x.max() > 1
    np.testing.assert_array_equal(x, raw.reshape(5, 784))
    assert t.dtype == np.float32 and t.shape == (5, 10)
    np.testing.assert_array_equal(t.argmax(1), [0, 1, 2, 3, 4])
    assert t.sum() == 5


def test_root_from_env_and_default(tmp_path: Path, monkeypatch, fake_payloads) -> None:
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env-root"))
    assert data.mnist_root() == tmp_path / "env-root"
    assert data.mnist_root(tmp_path) == tmp_path
    write_root(tmp_path / "env-root", fake_payloads)
    assert load_mnist(download=False)[0][0].shape == (5, 1, 28, 28)
    monkeypatch.delenv(data.ENV_VAR)
    assert data.mnist_root() == Path.home() / ".cache" / "tinygrad_cnn" / "mnist"


def test_checksum_mismatch_names_file(tmp_path: Path, fake_payloads, monkeypatch) -> None:
    root = write_root(tmp_path, fake_payloads)
    monkeypatch.setitem(data.SHA256_PAYLOAD, NAMES[3], "0" * 64)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*sha256"):
        load_mnist(root, download=False)


@pytest.mark.parametrize(
    "which, arr, match",
    [
        (1, np.arange(4, dtype=np.uint8), r"train-images.*5 images but .*train-labels.*4 labels"),
        (1, np.array([0, 1, 2, 3, 10], np.uint8), r"train-labels.*labels must be 0-9, found 10"),
        (2, np.zeros((3, 27, 28), np.uint8), r"t10k-images.*28x28.*\(3, 27, 28\)"),
        (2, np.zeros(3, np.uint8), r"t10k-images.*28x28.*\(3,\)"),
    ],
    ids=["count", "label>9", "size", "swapped"],
)
def test_inconsistent_files(tmp_path, fake_payloads, monkeypatch, which, arr, match) -> None:
    bad = idx_bytes(arr)
    fake_payloads[NAMES[which]] = bad
    monkeypatch.setitem(data.SHA256_PAYLOAD, NAMES[which], hashlib.sha256(bad).hexdigest())
    with pytest.raises(ValueError, match=match):
        load_mnist(write_root(tmp_path, fake_payloads), download=False)


def test_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(MNISTNotFoundError, match="download=False") as info:
        load_mnist(tmp_path / "empty", download=False)
    assert all(name in str(info.value) for name in NAMES)


def test_unknown_subset() -> None:
    with pytest.raises(ValueError, match="mini"):
        load_mnist(subset="tiny")


# --------------------------------------------------------------------------- download


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}
    log: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.log.append(self.path)
        status, body = self.routes.get(self.path, (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch) -> Iterator[tuple[str, dict, list]]:
    """A local HTTP server on 127.0.0.1: yields (base url, routes, request log)."""
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    handler = type("Handler", (_Handler,), {"routes": {}, "log": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.routes, handler.log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def serve(routes: dict, prefix: str, payloads: dict[str, bytes]) -> None:
    for name, raw in payloads.items():
        routes[f"{prefix}{name}.gz"] = (200, gzip.compress(raw, mtime=0))


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_download_caches_verified_files(tmp_path, fake_payloads, server) -> None:
    base, routes, log = server
    serve(routes, "/m/", fake_payloads)
    cache = tmp_path / "cache"
    (x, _), _ = load_mnist(cache, mirrors=[f"{base}/m/"], timeout=5)
    assert x.shape == (5, 1, 28, 28)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    assert len(log) == 4
    load_mnist(cache, mirrors=[f"{base}/m/"])  # cached: no new request
    assert len(log) == 4


def test_bad_checksum_leaves_nothing(tmp_path, fake_payloads, server) -> None:
    base, routes, _ = server
    serve(routes, "/m/", fake_payloads)
    routes[f"/m/{NAMES[0]}.gz"] = (200, gzip.compress(b"tampered"))
    cache = tmp_path / "cache"
    with pytest.raises(MNISTNotFoundError, match="md5 mismatch") as info:
        load_mnist(cache, mirrors=[f"{base}/m/"], timeout=5)
    assert NAMES[0] in str(info.value)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in NAMES[1:])


@pytest.mark.parametrize("status", [404, 500])
def test_server_error_falls_through_to_next_mirror(tmp_path, fake_payloads, server, status):
    base, routes, log = server
    serve(routes, "/good/", fake_payloads)
    for name in NAMES:
        routes[f"/bad/{name}.gz"] = (status, b"error")
    load_mnist(tmp_path, mirrors=[f"{base}/bad", f"{base}/good/"], timeout=5)
    assert log == [f"/{m}/{n}.gz" for n in NAMES for m in ("bad", "good")]


def test_all_mirrors_fail_gives_one_clear_error(tmp_path, fake_payloads, server) -> None:
    base, _, log = server
    root = tmp_path / "nowhere"
    dead = closed_port_url()
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist(root, mirrors=[f"{base}/empty/", dead], timeout=5)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for needed in (*NAMES, str(root), data.ENV_VAR, ".gz", "404", dead):
        assert needed in message, needed
    assert len(log) == 4  # the refused mirror is not retried for every file
    assert not root.exists() or not any(root.iterdir())


# --------------------------------------------------------------------------- real MNIST


@pytest.fixture(scope="module")
def full() -> tuple:
    if not FULL.is_dir():
        pytest.skip(f"full MNIST not found at {FULL}")
    return load_mnist(FULL, download=False)


def test_full_mnist(full) -> None:
    (x, t), (xt, tt) = full
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == np.float32 and xt.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0 and xt.min() == 0.0 and xt.max() == 1.0
    assert t.dtype == np.int64 and t.shape == (60000,) and tt.shape == (10000,)
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(t).tolist() == train_counts
    assert np.bincount(tt).tolist() == test_counts
    assert t[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_full_mnist_from_decompressed_files(tmp_path: Path, full) -> None:
    for name in NAMES[:2]:  # training files as shipped (.gz), test files decompressed
        (tmp_path / f"{name}.gz").symlink_to(FULL / f"{name}.gz")
    for name in NAMES[2:]:
        (tmp_path / name).write_bytes(gzip.decompress((FULL / f"{name}.gz").read_bytes()))
    _, (xt, tt) = load_mnist(tmp_path, flatten=True, one_hot_label=True, download=False)
    assert xt.shape == (10000, 784) and tt.shape == (10000, 10)
    np.testing.assert_array_equal(xt, full[1][0].reshape(10000, 784))
    np.testing.assert_array_equal(tt.argmax(1), full[1][1])


def test_mini_set() -> None:
    (x, t), (xt, tt) = load_mnist(subset="mini")
    assert x.shape == (10000, 1, 28, 28) and xt.shape == (2000, 1, 28, 28)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() == 1.0
    assert t.dtype == np.int64 and t[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    (x2, t2), _ = data.load_mnist_mini(normalize=False, flatten=True, one_hot_label=True)
    assert x2.shape == (10000, 784) and x2.max() == 255 and t2.shape == (10000, 10)
    np.testing.assert_array_equal(t2.argmax(1), t)


def test_mini_is_prefix_of_full(full) -> None:
    (x, t), (xt, tt) = data.load_mnist_mini()
    np.testing.assert_array_equal(x, full[0][0][:10000])
    np.testing.assert_array_equal(t, full[0][1][:10000])
    np.testing.assert_array_equal(xt, full[1][0][:2000])
    np.testing.assert_array_equal(tt, full[1][1][:2000])


def test_mini_checksum_is_verified(monkeypatch) -> None:
    monkeypatch.setitem(data.MINI_SHA256, "t_test", "0" * 64)
    with pytest.raises(ValueError, match="t_test"):
        data.load_mnist_mini()


# --------------------------------------------------------------------------- BatchIterator


def epochs(it: BatchIterator, n: int) -> list[list[np.ndarray]]:
    return [[b[0] for b in it] for _ in range(n)]


@given(n=st.integers(1, 40), bs=st.integers(1, 12), drop=st.booleans(), seed=st.integers(0, 9))
def test_every_sample_once_per_epoch(n: int, bs: int, drop: bool, seed: int) -> None:
    it = BatchIterator(np.arange(n), batch_size=bs, drop_last=drop, seed=seed)
    assert len(it) == (n // bs if drop else -(-n // bs))
    for batches in epochs(it, 3):
        assert len(batches) == len(it)
        assert all(len(b) == bs for b in batches[: n // bs])
        seen = np.concatenate(batches) if batches else np.array([], int)
        if drop:
            assert len(seen) == (n // bs) * bs and len(set(seen.tolist())) == len(seen)
        else:
            assert sorted(seen.tolist()) == list(range(n))


def test_short_batch_kept_or_dropped_and_arrays_aligned() -> None:
    x, t = np.arange(10 * 3).reshape(10, 3), np.arange(10) * 10
    kept = list(BatchIterator(x, t, batch_size=4, seed=1))
    assert [len(b[0]) for b in kept] == [4, 4, 2]
    for xb, tb in kept:
        np.testing.assert_array_equal(xb[:, 0] * 10 // 3, tb)
        assert not np.shares_memory(xb, x)
    assert [len(b[0]) for b in BatchIterator(x, t, batch_size=4, drop_last=True)] == [4, 4]
    ordered = list(BatchIterator(t, batch_size=4, shuffle=False))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in ordered]), t)


def test_seed_determinism_and_fresh_permutations() -> None:
    a = epochs(BatchIterator(np.arange(50), batch_size=7, seed=3), 2)
    b = epochs(BatchIterator(np.arange(50), batch_size=7, seed=3), 2)
    for ea, eb in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.concatenate(ea), np.concatenate(eb))
    assert not np.array_equal(np.concatenate(a[0]), np.concatenate(a[1]))


def test_state_dict_resumes_identically_even_mid_epoch() -> None:
    data_ = np.arange(23)
    ref = BatchIterator(data_, batch_size=5, seed=7)
    expected = [b[0] for b in ref] + [b[0] for b in ref] + [b[0] for b in ref]

    run = BatchIterator(data_, batch_size=5, seed=7)
    got = [b[0] for b in run]  # epoch 1
    stream = iter(run)
    got += [next(stream)[0], next(stream)[0]]  # 2 batches into epoch 2, then "crash"
    saved = json.loads(json.dumps(run.state_dict()))
    assert saved["batches_done"] == 2

    resumed = BatchIterator(data_, batch_size=5, seed=12345)
    resumed.load_state_dict(saved)
    assert resumed.state_dict() == saved
    got += [b[0] for b in resumed] + [b[0] for b in resumed]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


def test_batch_iterator_validation() -> None:
    with pytest.raises(ValueError, match="first dimension"):
        BatchIterator(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(np.zeros(3), batch_size=0)
    with pytest.raises(ValueError, match="at least one"):
        BatchIterator()
