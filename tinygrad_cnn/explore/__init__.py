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
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from ..anomaly import user_frame
from ..audit import AuditReport
from ..autograd import Function, on_op_created
from ..io import atomic_write
from ..tensor import Tensor
from ..viz import graph_tensors
from .model import SITES, page_data

__all__ = ["explore", "explore_html", "page_data", "record_sites"]

#: Graphs with more ops than this are not embedded in a notebook (the page grows ~1.3 kB per op).
NOTEBOOK_MAX_OPS = 1000

#: The page around the data; the stylesheet and the script are inlined from package files.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head><body>
<header id="bar">
  <span id="crumbs"></span>
  <label title="levels of modules shown open below this view; empty: every level">depth
    <input id="depth" type="number" min="0" value="" placeholder="all"></label>
  <input id="search" type="search" placeholder="name, op, module or id" autocomplete="off"
    title="Case-insensitive: a tensor's name, an op's name or label, or a module path containing
the text; or a node id such as n3 exactly. Exact matches first, then names, then modules.">
  <span class="bw">backward
    <button id="bw-reset" title="back to the start">reset</button>
    <button id="bw-play" title="play the backward pass in the engine's order">play</button>
    <select id="bw-speed" title="how long playing the whole pass takes at most; a short
pass plays one op per 0.15 s, a long one several ops per frame">
      <option value="3">in 3 s</option><option value="15" selected>in 15 s</option>
      <option value="60">in 60 s</option></select>
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
    if isinstance(root, str | os.PathLike):
        raise TypeError(
            f"explore: root must be a Tensor or a list of Tensors, got the path {str(root)!r}; "
            "the root comes first: explore(loss, 'graph.html')"
        )
    if not isinstance(root, Tensor | list | tuple):
        raise TypeError(
            f"explore: root must be a Tensor or a list of Tensors, got {type(root).__name__}"
        )
    roots = (root,) if isinstance(root, Tensor) else tuple(root)
    if not roots:
        raise ValueError("explore: give at least one root tensor")
    for i, r in enumerate(roots):
        name = "root" if isinstance(root, Tensor) else f"root {i}"
        if not isinstance(r, Tensor):
            raise TypeError(f"explore: {name} must be a Tensor, got {type(r).__name__}")
        if r.op is None:
            raise ValueError(
                f"explore: {name} {r.shape} is a leaf tensor: no op made it, so there is no "
                "graph to explore (a tensor you created, a parameter, an index result such as "
                "argmax's, or a result computed under no_grad(), which records no ops); "
                "explore the result of a differentiable computation"
            )
    return roots


def explore_html(
    root: Tensor | Sequence[Tensor],
    audit: AuditReport | None = None,
    title: str = "tinygrad_cnn graph",
) -> str:
    """The explorer page of the graph ending at ``root`` as one HTML string (see ``explore``)."""
    if not isinstance(title, str):
        raise TypeError(f"explore: title must be a str, got {type(title).__name__}")
    data = page_data(_roots(root), audit=audit, title=title)
    # "</" inside a script element would end it early; JSON allows "<\/" for it.
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return PAGE.format(title=html.escape(title), css=_asset("explorer.css"), data=text,
                       js=_asset("explorer.js"))  # fmt: skip


def explore(
    root: Tensor | Sequence[Tensor],
    path: str | os.PathLike,
    *,
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
    path : str or os.PathLike
        The ``.html`` file to write (replaced atomically). ``~`` is expanded; missing folders
        are created, as every saver of the package does.
    audit : AuditReport, optional
        ``audit_graph(root)``'s report, to show each op's verdict.
    title : str
        The page title.

    Returns
    -------
    Path
        The file written (``path`` with ``~`` expanded).

    Raises
    ------
    TypeError
        ``root`` is not a Tensor (or a sequence of them), or ``path`` is not a str or
        os.PathLike (e.g. the arguments swapped, or bytes).
    ValueError
        A root is a leaf (no op made it: no graph), ``path`` is a folder or does not end in
        ``.html``/``.htm``, or ``audit`` is of another graph.

    Examples
    --------
    >>> explore(net.loss(x, t), "graph.html")      # doctest: +SKIP
    """
    roots = _roots(root)  # first: explore("g.html", loss) names the root, not the path
    if not isinstance(path, str | os.PathLike) or isinstance(os.fspath(path), bytes):
        shown = type(path).__name__ if not isinstance(path, bytes) else "bytes (decode it)"
        raise TypeError(f"explore: path must be a str or os.PathLike, got {shown}")
    text = os.fspath(path)
    path = Path(text).expanduser()
    if path.is_dir() or text.endswith(("/", os.sep)):
        raise ValueError(
            f"explore: path {text!r} is a folder; give the .html file to write in it, "
            f"e.g. {str(path / 'graph.html')!r}"
        )
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"explore: path must end in .html or .htm, got {text!r}")
    page = explore_html(roots, audit=audit, title=title)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def notebook_html(t: Tensor) -> str | None:
    """The explorer in an ``<iframe>`` for Jupyter (``Tensor._repr_html_``).

    None for a leaf or when the page cannot be made (no ``dot`` program, a freed graph), so
    Jupyter shows the next representation. A graph of more than ``NOTEBOOK_MAX_OPS`` ops is
    not embedded (the notebook would grow by megabytes): a note says how to write its page.
    """
    if t.op is None:
        return None
    try:
        ops = sum(u.op is not None for u in graph_tensors(t))
        page = explore_html(t) if ops <= NOTEBOOK_MAX_OPS else None
    except Exception:  # fall back to the next representation Jupyter knows
        return None
    if page is None:
        return (f"<pre>{html.escape(repr(t))}</pre><p>Its graph has {ops} ops, more than the "
                f"{NOTEBOOK_MAX_OPS} shown inline: <code>explore(t, &quot;graph.html&quot;)"
                "</code> writes it as a page to open in a browser.</p>")  # fmt: skip
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:640px;'
            'border:1px solid #ccc" sandbox="allow-scripts"></iframe>')  # fmt: skip
