"""Tests added while triaging mutmut's survivors in data.py's loading and download code.

See scripts/MUTATION.md. A small local HTTP server of our own serves exact bodies, with or
without a Content-Length header, and can drop connections or stall.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import inspect
import itertools
import logging
import re
import socket
import threading
import time
import types
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from tinygrad_cnn import data
from tinygrad_cnn.data import MNISTNotFoundError, load_mnist

NAMES = data.FILES


def _idx(arr: np.ndarray) -> bytes:
    magic = {1: 0x801, 3: 0x803}[arr.ndim]
    return (
        magic.to_bytes(4, "big")
        + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        + (arr.astype(np.uint8).tobytes())
    )


@pytest.fixture
def payloads(monkeypatch) -> dict[str, bytes]:
    """Fake MNIST (3 train, 2 test images) installed as the official files: sums and sizes."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (3, 28, 28)), np.array([1, 2, 3]),
              rng.integers(0, 256, (2, 28, 28)), np.array([4, 5])]  # fmt: skip
    out = {}
    for name, arr in zip(NAMES, arrays, strict=True):
        raw = out[name] = _idx(arr)
        gz = gzip.compress(raw, mtime=0)
        monkeypatch.setitem(data.SHA256_PAYLOAD, name, hashlib.sha256(raw).hexdigest())
        monkeypatch.setitem(data.MD5_GZ, name, hashlib.md5(gz).hexdigest())
        monkeypatch.setitem(data.SIZE_GZ, name, len(gz))
    return out


class _Server:
    """Routes: path -> (body, send_length). ``rude`` paths close without an answer; ``stall``
    paths wait ``stall`` seconds before closing."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, bool]] = {}
        self.rude: set[str] = set()
        self.stall = 0.0
        self.hits: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server.hits.append(self.path)
                if self.path in server.rude:
                    self.close_connection = True
                    return
                if server.stall:
                    time.sleep(server.stall)
                    return
                body, send_length = server.routes.get(self.path, (b"", None))
                self.send_response(200 if send_length is not None else 404)
                if send_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for i in range(0, len(body), 1000):  # several writes: several reads
                    self.wfile.write(body[i : i + 1000])
                    self.wfile.flush()
                    time.sleep(0.02)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, prefix: str, payloads: dict[str, bytes], send_length: bool = True) -> None:
        for name, raw in payloads.items():
            self.routes[f"{prefix}{name}.gz"] = (gzip.compress(raw, mtime=0), send_length)


@pytest.fixture
def server(monkeypatch) -> Iterator[_Server]:
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    s = _Server()
    thread = threading.Thread(target=s.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()
        thread.join(5)


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


# --------------------------------------------------------------------------- download


def test_a_body_of_exactly_the_expected_size_is_accepted(tmp_path, payloads, server) -> None:
    server.serve("/m/", payloads, send_length=False)  # no header: the byte count decides
    (x, t), _ = load_mnist(tmp_path, mirrors=[f"{server.url}/m/"], timeout=5)
    assert x.shape == (3, 1, 28, 28) and t.tolist() == [1, 2, 3]


def test_a_body_larger_than_expected_is_cut_off(tmp_path, payloads, server, monkeypatch) -> None:
    """Counted over every chunk, without a Content-Length header to go by."""
    server.serve("/m/", payloads, send_length=False)
    monkeypatch.setitem(data.SIZE_GZ, NAMES[0], data.SIZE_GZ[NAMES[0]] - 1)
    with pytest.raises(MNISTNotFoundError, match=r"body is larger than the expected"):
        load_mnist(tmp_path, mirrors=[f"{server.url}/m/"], timeout=5)


def test_an_announced_oversize_body_is_refused_up_front(tmp_path, payloads, server, monkeypatch):
    server.serve("/m/", payloads)
    limit = data.SIZE_GZ[NAMES[0]] - 1
    monkeypatch.setitem(data.SIZE_GZ, NAMES[0], limit)
    with pytest.raises(MNISTNotFoundError, match=rf"announces {limit + 1:,} bytes, larger than"):
        load_mnist(tmp_path, mirrors=[f"{server.url}/m/"], timeout=5)


def test_a_refused_mirror_is_skipped_not_the_end(tmp_path, payloads, server, caplog) -> None:
    server.serve("/m/", payloads)
    dead = _closed_port()
    with caplog.at_level(logging.INFO, logger="tinygrad_cnn.data"):
        load_mnist(tmp_path, mirrors=[dead, f"{server.url}/m/"], timeout=5)
    assert len(server.hits) == 4
    logged = [r.getMessage() for r in caplog.records if r.name == "tinygrad_cnn.data"]
    assert f"downloading {dead}{NAMES[0]}.gz" in logged
    assert f"downloading {server.url}/m/{NAMES[3]}.gz" in logged


def test_a_mirror_that_drops_connections_is_tried_once(tmp_path, payloads, server) -> None:
    server.serve("/good/", payloads)
    server.rude.update(f"/rude/{n}.gz" for n in NAMES)
    load_mnist(tmp_path, mirrors=[f"{server.url}/rude/", f"{server.url}/good/"], timeout=5)
    assert [h for h in server.hits if h.startswith("/rude/")] == [f"/rude/{NAMES[0]}.gz"]


def test_every_failed_attempt_is_reported_with_its_error_type(tmp_path, monkeypatch) -> None:
    dead = _closed_port()
    monkeypatch.setattr(data, "MIRRORS", [dead])  # the default mirrors are data.MIRRORS
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist(tmp_path / "r", timeout=5)
    message = str(info.value)
    assert f"  {dead}{NAMES[0]}.gz: URLError: " in message
    assert f"missing from {tmp_path / 'r'}: {', '.join(NAMES)}.\nDownload attempts:\n  " in message
    assert "environment variable (or root=...) at a folder holding them. " in message
    assert message.endswith("load_mnist(subset='mini') works offline.")
    with pytest.raises(MNISTNotFoundError, match=r"\n  \(download=False, nothing tried\)\n"):
        load_mnist(tmp_path / "r", download=False)


def test_a_stalled_server_meets_the_read_timeout(tmp_path, payloads, server) -> None:
    server.serve("/m/", payloads)
    server.stall = 3.0
    start = time.monotonic()
    with pytest.raises(MNISTNotFoundError, match="timed out"):
        load_mnist(tmp_path, mirrors=[f"{server.url}/m/"], timeout=0.3, deadline=60)
    assert time.monotonic() - start < 2.5


def test_download_defaults() -> None:
    params = inspect.signature(load_mnist).parameters
    assert params["timeout"].default == 30.0 and params["deadline"].default == 600.0


# --------------------------------------------------------------------------- local files


def test_mini_subset_honours_flatten_and_one_hot() -> None:
    (x, t), (xt, tt) = load_mnist(subset="mini", flatten=True, one_hot_label=True)
    assert x.shape == (10000, 784) and xt.shape == (2000, 784)
    assert t.shape == (10000, 10) and t.dtype == np.float32 and (t.sum(axis=1) == 1).all()
    assert tt.shape == (2000, 10)
    (x, t), (xt, tt) = data.load_mnist_mini(normalize=False)
    assert t.shape == (10000,) and tt.shape == (2000,)  # integer labels by default
    assert x.shape == (10000, 1, 28, 28) and xt.max() == 255.0


def test_mini_set_with_a_missing_array_is_reported_as_damaged(monkeypatch) -> None:
    real = data.load_npz
    monkeypatch.setattr(data, "load_npz", lambda path: {
        k: v for k, v in real(path).items() if k != "t_test"})  # fmt: skip
    with pytest.raises(ValueError, match=r"array 't_test' fails its checksum; the package data"):
        data.load_mnist_mini()


def test_bad_local_files_are_named(tmp_path, payloads, monkeypatch) -> None:
    for name, raw in payloads.items():
        (tmp_path / name).write_bytes(raw)
    bad = tmp_path / NAMES[1]
    bad.write_bytes(b"\0\0\x08\x09" + bytes(8))
    with pytest.raises(ValueError, match=rf"^{bad}: not an MNIST IDX file"):
        load_mnist(tmp_path, download=False)
    # well-formed IDX files of the wrong kind: images where labels belong
    images = payloads[NAMES[0]]
    bad.write_bytes(images)
    monkeypatch.setitem(data.SHA256_PAYLOAD, NAMES[1], hashlib.sha256(images).hexdigest())
    with pytest.raises(ValueError, match=rf"^{bad}: expected a 1-d label file, got an IDX array"):
        load_mnist(tmp_path, download=False)
    bad.write_bytes(b"\0\0\x08\x01\0\0\0\x03abc")
    with pytest.raises(ValueError, match=r"is corrupt or not MNIST: delete or replace it$"):
        load_mnist(tmp_path, download=False)


# --------------------------------------------------------------------------- second pass


def test_default_timeout_and_deadline_reach_every_download(tmp_path, payloads, server, monkeypatch):
    """What the downloads get, not the signature (under mutmut ``load_mnist`` is a wrapper
    that shows the original's signature). Each reading of the clock is 700 s later, so every
    file misses the 600 s deadline after its first chunk; all four failures are listed."""
    server.serve("/m/", payloads)
    timeouts = []
    real_urlopen = urllib.request.urlopen

    def urlopen(url, *args, timeout, **kwargs):
        timeouts.append(timeout)
        return real_urlopen(url, *args, timeout=timeout, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    clock = itertools.count(0.0, 700.0)
    monkeypatch.setattr(data, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    with pytest.raises(MNISTNotFoundError) as info:
        load_mnist(tmp_path, mirrors=[f"{server.url}/m/"])
    assert timeouts == [30.0] * 4
    lines = [
        re.escape(f"  {server.url}/m/{n}.gz: ValueError: not complete after the 600 s deadline (")
        + r"[\d,]+ bytes\)"
        for n in NAMES
    ]
    message = str(info.value)
    assert re.search("\nDownload attempts:\n" + "\n".join(lines) + "\nPut the four", message)
    assert message.endswith(
        f"or point the {data.ENV_VAR} environment variable (or root=...) at a folder holding "
        "them. load_mnist(subset='mini') works offline."
    )


def test_mini_set_is_normalized_by_default_in_both_splits() -> None:
    (x, _), (xt, _) = load_mnist(subset="mini")
    for images in (x, xt):
        assert images.dtype == np.float32
        assert images.min() == 0.0 and images.max() == 1.0
