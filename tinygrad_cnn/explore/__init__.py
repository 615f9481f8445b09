"""The graph explorer: one self-contained HTML page to inspect a graph in a browser.

The page is laid out by Graphviz (``dot``) when it is made, and a small script of our own
(``explorer.js``, inlined with its stylesheet) draws it with stable node ids and makes it
interactive: click a node for its panel (op attributes, shapes, value and gradient statistics
with histograms, the audit verdict, the line of your code that created it), fold and unfold
modules, limit the depth, search by name, and play the backward pass op by op in the engine's
order with the gradient norm on every edge. Nothing is fetched when the page is viewed.

>>> with record_sites():                    # remember which line created each op
...     loss = net.loss(x, t)
>>> explore(loss, "graph.html")             # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from ..anomaly import user_frame
from ..audit import AuditReport
from ..autograd import Function, on_op_created
from ..io import atomic_write
from ..tensor import Tensor
from .model import SITES, page_data

__all__ = ["explore", "explore_html", "page_data", "record_sites"]

#: The page around the data; the stylesheet and the script are inlined from package files.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head><body>
<header id="bar">
  <span id="crumbs"></span>
  <label>depth <input id="depth" type="number" min="0" value=""></label>
  <input id="search" type="search" placeholder="search by name" autocomplete="off">
  <span class="bw">backward
    <button id="bw-reset" title="back to the start">reset</button>
    <button id="bw-play" title="play the backward pass, op by op">play</button>
    <button id="bw-step" title="one op">step</button>
    <button id="bw-end" title="to the end">end</button>
    <span id="bw-status"></span></span>
</header>
<ul id="results" hidden></ul>
<main><div id="canvas"></div><aside id="panel"><p class="hint">Click a node to inspect it;
click a module's title to fold it.</p></aside></main>
<script id="explorer-data" type="application/json">{data}</script>
<script>{js}</script>
</body></html>
"""


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@contextmanager
def record_sites() -> Iterator[None]:
    """Remember the line of your code that creates each op inside the block (this thread).

    The explorer's panel shows it as ``file:line in function``, as ``detect_anomaly`` quotes
    it in its errors. The cost is one frame walk per op while the block runs.

    Examples
    --------
    >>> with record_sites():                # doctest: +SKIP
    ...     loss = net.loss(x, t)
    """

    def created(fn: Function, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        site = user_frame()
        if site is not None:
            SITES[fn] = site

    with on_op_created(created):
        yield


def _roots(root: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    if not isinstance(root, Tensor | list | tuple):
        raise TypeError(
            f"explore: root must be a Tensor or a list of Tensors, got {type(root).__name__}"
        )
    roots = (root,) if isinstance(root, Tensor) else tuple(root)
    if not roots:
        raise ValueError("explore: give at least one root tensor")
    for i, r in enumerate(roots):
        if not isinstance(r, Tensor):
            raise TypeError(f"explore: root {i} must be a Tensor, got {type(r).__name__}")
    return roots


def explore_html(
    root: Tensor | Sequence[Tensor],
    audit: AuditReport | None = None,
    title: str = "tinygrad_cnn graph",
) -> str:
    """The explorer page of the graph ending at ``root`` as one HTML string (see ``explore``)."""
    data = page_data(_roots(root), audit=audit, title=title)
    # "</" inside a script element would end it early; JSON allows "<\/" for it.
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return PAGE.format(title=html.escape(title), css=_asset("explorer.css"), data=text,
                       js=_asset("explorer.js"))  # fmt: skip


def explore(
    root: Tensor | Sequence[Tensor],
    path: str | Path,
    audit: AuditReport | None = None,
    title: str = "tinygrad_cnn graph",
) -> Path:
    """Write an interactive, self-contained HTML explorer of the graph ending at ``root``.

    Open the file in any browser; it needs no network. Click a node for its panel (op and
    attributes, input/output shapes and dtypes, value and gradient statistics with
    histograms, the audit verdict, the creating line under ``record_sites()``, a
    parameter's module), fold modules, set the depth, search by name, and play the backward
    pass in the engine's order with the gradient norm on each edge. Large graphs open
    folded; groups too big for one layout open in a view of their own.

    Parameters
    ----------
    root : Tensor or sequence of Tensor
        Usually the loss. Explore before ``backward()`` or after ``backward(retain_graph=True)``;
        the gradients shown are those of the sum of the roots, computed here without
        touching any ``.grad``.
    path : str or Path
        The ``.html`` file to write (replaced atomically).
    audit : AuditReport, optional
        ``audit_graph(root)``'s report, to show each op's verdict.
    title : str
        The page title.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> explore(net.loss(x, t), "graph.html")      # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"explore: path must end in .html or .htm, got {str(path)!r}")
    page = explore_html(root, audit=audit, title=title)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def notebook_html(t: Tensor) -> str | None:
    """The explorer in an ``<iframe>`` for Jupyter (``Tensor._repr_html_``); None for a leaf
    or when the page cannot be made (no ``dot`` program, a freed graph)."""
    if t.op is None:
        return None
    try:
        page = explore_html(t)
    except Exception:  # fall back to the next representation Jupyter knows
        return None
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:640px;'
            'border:1px solid #ccc" sandbox="allow-scripts"></iframe>')  # fmt: skip
