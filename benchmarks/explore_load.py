"""Page size, page-making time and load time in headless chromium of the graph explorer, for
SimpleConvNet's loss graph and for a 20,000-op chain (which must load in under 3 s).

Load time is measured from navigation start to the moment the script has drawn the first view
(``performance.now()`` when ``explorer.ready`` is set), best of three.

Usage: python benchmarks/explore_load.py [--ops 20000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tinygrad_cnn import Tensor
from tinygrad_cnn.explore import explore
from tinygrad_cnn.nn import SimpleConvNet


def simpleconvnet() -> Tensor:
    rng = np.random.default_rng(0)
    net = SimpleConvNet(seed=0)
    return net.loss(rng.random((100, 1, 28, 28), dtype=np.float32), np.arange(100) % 10)


def chain(ops: int) -> Tensor:
    """``ops`` elementwise ops, Mul and Add by a constant in turn (each constant a node)."""
    y = Tensor(np.linspace(-1, 1, 16, dtype=np.float32), requires_grad=True, name="x")
    for i in range(ops - 1):
        y = y * 1.0001 if i % 2 else y + 0.001
    return y.sum()  # the last op


def load_ms(driver, path: Path) -> float:
    best = float("inf")
    for _ in range(3):
        driver.get(path.as_uri())
        ready = None
        for _ in range(600):
            ready = driver.execute_script("return window.explorer && window.explorer.readyAt")
            if ready:
                break
            time.sleep(0.01)
        if not ready:
            sys.exit(f"{path.name}: the explorer did not start")
        best = min(best, ready)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    if errors:
        sys.exit(f"{path.name}: JavaScript errors: {errors}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20000)
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")),
                              options=options)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as folder:
            print(f"{'graph':<28} {'ops':>6} {'page MB':>8} {'make s':>7} {'load ms':>8}")
            for name, make in [("SimpleConvNet (batch 100)", simpleconvnet),
                               (f"chain of {args.ops} ops", lambda: chain(args.ops))]:  # fmt: skip
                root = make()
                ops = sum(t.op is not None for t in _tensors(root))
                start = time.perf_counter()
                path = explore(root, Path(folder) / "page.html")
                made = time.perf_counter() - start
                size = path.stat().st_size / 1e6
                load = load_ms(driver, path)
                print(f"{name:<28} {ops:>6} {size:>8.2f} {made:>7.2f} {load:>8.0f}")
    finally:
        driver.quit()


def _tensors(root: Tensor) -> list[Tensor]:
    from tinygrad_cnn.viz import graph_tensors

    return graph_tensors(root)


if __name__ == "__main__":
    main()
