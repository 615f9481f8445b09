"""The graph explorer in a real browser (headless chromium driven by selenium): panel, folding,
depth, search, portals, backward playback, no JavaScript error, and the README screenshot.

Without chromium, chromedriver or selenium these tests skip locally and fail when CI=true.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn import Tensor
from tinygrad_cnn.explore import explore, record_sites
from tinygrad_cnn.nn import SimpleConvNet

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "explorer.png"


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    for exe in ("dot", "chromedriver"):
        if shutil.which(exe) is None:
            return f"{exe!r} is not on PATH (apt-get install graphviz chromium chromium-driver)"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium is not on PATH (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator:
    missing = _missing()
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test the explorer in a browser: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,860", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium never tries to download one.
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")),
                              options=options)  # fmt: skip
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory, browser) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("explorer")
    rng = np.random.default_rng(0)
    net = SimpleConvNet(seed=0)
    with record_sites():
        loss = net.loss(rng.random((8, 1, 28, 28), dtype=np.float32), np.arange(8))
    y = Tensor(np.linspace(-1, 1, 8, dtype=np.float32), requires_grad=True, name="x")
    for i in range(1500):
        y = y * 1.0001 if i % 2 else y + 0.01
    return {"net": explore(loss, folder / "net.html", title="SimpleConvNet loss"),
            "chain": explore(y.sum(), folder / "chain.html")}  # fmt: skip


def open_page(browser, path: Path) -> None:
    browser.get(path.as_uri())
    for _ in range(100):
        if browser.execute_script("return !!(window.explorer && window.explorer.ready)"):
            return
        time.sleep(0.05)
    raise AssertionError(f"the explorer did not start: {severe(browser)}")


def severe(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def visible(browser) -> int:
    """Nodes drawn now: node boxes not hidden, plus folded module boxes."""
    return browser.execute_script(
        "return document.querySelectorAll('#graph .node:not(.hidden)').length +"
        " document.querySelectorAll('#graph .cluster.folded:not(.hidden)').length"
    )


def node_by_label(browser, text: str):
    for el in browser.find_elements("css selector", "#graph .node"):
        if text in el.text:
            return el
    raise AssertionError(f"no node shows {text!r}")


def search(browser, text: str) -> list:
    """Type ``text`` into the search box; the result items (the count note left out)."""
    browser.execute_script("document.getElementById('results').textContent = ''")
    box = browser.find_element("id", "search")
    box.clear()
    box.send_keys(text)
    for _ in range(40):
        if browser.find_elements("css selector", "#results li.note"):
            break
        time.sleep(0.05)
    return browser.find_elements("css selector", "#results li:not(.note)")


def test_click_a_node_shows_its_shapes_and_statistics(browser, pages):
    open_page(browser, pages["net"])
    node_by_label(browser, "Conv2d").click()
    panel = browser.find_element("id", "panel").text
    assert "output (8, 30, 24, 24) float32" in panel
    assert "input 1 (30, 1, 5, 5) float32" in panel and "stride (1, 1)" in panel
    assert "test_explore_browser.py:" in panel  # the line that created it
    node_by_label(browser, "conv1.weight").click()
    panel = browser.find_element("id", "panel").text
    assert "parameter of SimpleConvNet.conv1" in panel and "gradient" in panel
    assert len(browser.find_elements("css selector", "#panel svg.hist")) == 2
    assert not severe(browser)


def test_fold_and_unfold_a_module(browser, pages):
    open_page(browser, pages["net"])
    before = visible(browser)
    browser.find_element("css selector", "#graph .cluster[id] .title").click()  # the network
    assert visible(browser) == 5  # the folded network; images, labels, the loss op, the loss
    browser.find_element("css selector", "#graph .cluster.folded rect").click()
    assert visible(browser) == before
    conv1 = [c for c in browser.find_elements("css selector", "#graph .cluster")
             if c.find_element("css selector", ".title").text.endswith("conv1")][0]  # fmt: skip
    conv1.find_element("css selector", ".title").click()
    assert visible(browser) == before - 4 + 1  # weight, bias, Conv2d and output -> one box
    assert "in (8, 1, 28, 28)" in conv1.text and "out (8, 30, 24, 24)" in conv1.text
    depth = browser.find_element("id", "depth")
    depth.clear()
    depth.send_keys("1\n")
    assert visible(browser) == 4 + 7  # the top-level nodes and the network's 7 folded layers
    assert not severe(browser)


def test_search_reveals_a_node(browser, pages):
    open_page(browser, pages["net"])
    browser.find_element("css selector", "#graph .cluster[id] .title").click()
    results = search(browser, "fc2.bias")
    assert len(results) == 1 and results[0].text.endswith("SimpleConvNet.fc2")
    results[0].click()
    selected = browser.find_element("css selector", "#graph .node.selected")
    assert "fc2.bias" in selected.text and selected.is_displayed()
    assert not severe(browser)


def test_backward_plays_every_op_in_the_engines_order(browser, pages):
    open_page(browser, pages["net"])
    order = browser.execute_script("return explorer.data.order")
    ops = browser.execute_script(
        "return [...document.querySelectorAll('#graph .node.op')].map(e => e.id)"
    )
    assert sorted(order) == sorted(ops) and len(ops) == 8
    browser.find_element("id", "bw-play").click()
    for _ in range(100):
        if browser.find_element("id", "bw-status").text.startswith("8/8"):
            break
        time.sleep(0.05)
    assert browser.execute_script("return explorer.highlighted") == order
    lit = browser.find_elements("css selector", "#graph .node.op.bw-done, #graph .node.op.bw-now")
    assert len(lit) == 8
    assert len(browser.find_elements("css selector", "#graph .norms text")) >= 8
    node_by_label(browser, "fc1.weight").click()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert not severe(browser)


def test_a_large_chain_opens_folded_and_portals_open_views(browser, pages):
    open_page(browser, pages["chain"])
    top = visible(browser)
    assert top < 60
    portal = browser.find_element("css selector", "#graph .node.portal")
    gid = portal.get_attribute("id")
    portal.click()
    assert browser.execute_script("return explorer.state.view") == gid
    crumbs = browser.find_elements("css selector", "#crumbs a")
    assert len(crumbs) == 2
    crumbs[0].click()
    assert browser.execute_script("return explorer.state.view") == "g0"
    browser.find_element("id", "bw-end").click()
    status = browser.find_element("id", "bw-status").text
    assert status.startswith("1501/1501")
    assert not severe(browser)


def test_search_matches_names_ops_modules_and_ids_not_dtypes(browser, pages):
    open_page(browser, pages["net"])
    tip = browser.find_element("id", "search").get_attribute("title")
    assert "node id" in tip and "module" in tip
    names = [r.text.split()[1] for r in search(browser, "t3")]
    assert names and all("t3" in name for name in names)  # not every tensor via "float32"
    assert search(browser, "n3")[0].text.split()[0] == "n3"  # an id, exactly
    assert not search(browser, "float32")  # dtypes and shapes are not searched
    linear = search(browser, "linear")
    assert [r.find_element("css selector", ".where").text for r in linear] == [
        "SimpleConvNet.fc1", "SimpleConvNet.fc2"]  # fmt: skip
    conv = search(browser, "Conv")  # names first, then what only its module path matches
    names = [r.text.split()[1].lower() for r in conv]
    assert names[:3] == ["conv1.weight", "conv1.bias", "conv2d"] and len(conv) > 10
    assert not [name for name in names[3:] if "conv" in name]
    assert all(r.find_element("css selector", ".where").text for r in conv)
    note = browser.find_element("css selector", "#results li.note").text
    assert note == f"{len(conv)} matches"
    assert not severe(browser)


def test_search_says_how_many_results_are_not_shown(browser, pages):
    open_page(browser, pages["chain"])
    assert len(search(browser, "t1")) == 50
    note = browser.find_element("css selector", "#results li.note").text
    n = browser.execute_script(
        "return Object.values(explorer.data.nodes).filter(n => n.k !== 'op' &&"
        " n.name.includes('t1')).length"
    )
    assert n > 50 and note == f"50 of {n} shown: type more to narrow"


def test_playing_a_long_backward_pass_is_time_bounded(browser, pages):
    from selenium.webdriver.support.ui import Select

    open_page(browser, pages["chain"])
    Select(browser.find_element("id", "bw-speed")).select_by_value("3")
    browser.find_element("id", "bw-play").click()
    for _ in range(200):
        if browser.find_element("id", "bw-play").text == "play":
            break
        time.sleep(0.05)
    order = browser.execute_script("return explorer.data.order")
    assert len(order) == 1501 and browser.execute_script("return explorer.highlighted") == order
    assert browser.execute_script("return explorer.ticks") <= 3000 / 150 + 1  # not 1501 ticks
    assert not severe(browser)
