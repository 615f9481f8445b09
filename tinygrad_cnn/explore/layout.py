"""Group the explorer's nodes by module (and long runs of ops into chunks), split the groups
into views small enough for Graphviz, and lay every view out with one run of ``dot``.

A *view* is one Graphviz layout: a group with the groups inside it drawn as clusters, except
groups too big to fit, which are drawn as one box (a *portal*) with a view of their own. The
browser folds clusters in place and opens a portal's view on click. Ids are stable: nodes keep
``viz.node_ids`` (``n0, n1, ...`` in topological order), groups are ``g0, g1, ...`` in order
of first appearance.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from ..viz import INSTALL_HINT, GraphvizNotFoundError

#: Ops in one group beyond which they are split into chunks of (at most) this many.
FAN = 40
#: Nodes one view may hold; a bigger group inside it becomes a portal.
VIEW_LIMIT = 1200


@dataclass
class Group:
    """A module (``kind="module"``), a chunk of consecutive ops (``"chunk"``) or the root."""

    id: str
    name: str
    kind: str
    parent: str | None
    depth: int
    children: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # direct members, topological order
    size: int = 0  # nodes in the whole subtree

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "parent": self.parent,
                "depth": self.depth, "children": self.children, "size": self.size}  # fmt: skip


class Groups:
    """The tree of groups, built by ``add_op`` / ``place`` calls, then ``finish``."""

    def __init__(self) -> None:
        self.by_id: dict[str, Group] = {"g0": Group("g0", "graph", "root", None, 0)}
        self._scopes: dict[tuple[str, ...], str] = {(): "g0"}
        self._ops: dict[str, list[str]] = {}  # module group -> its direct ops, in order

    def _new(self, name: str, kind: str, parent: str) -> str:
        gid = f"g{len(self.by_id)}"
        self.by_id[gid] = Group(gid, name, kind, parent, self.by_id[parent].depth + 1)
        self.by_id[parent].children.append(gid)
        return gid

    def scope_group(self, scope: tuple[str, ...]) -> str:
        """The group of a module path, made (with its parents) on first use."""
        if scope not in self._scopes:
            parent = self.scope_group(scope[:-1])
            self._scopes[scope] = self._new(scope[-1], "module", parent)
        return self._scopes[scope]

    def add_op(self, op: str, scope: tuple[str, ...]) -> None:
        self._ops.setdefault(self.scope_group(scope), []).append(op)

    def chunk(self) -> dict[str, str]:
        """Split long runs of ops into nested chunks of at most ``FAN``; return op -> group."""
        where: dict[str, str] = {}
        for gid, ops in list(self._ops.items()):
            tree: list[Any] = list(enumerate(ops, 1))  # (number, op) leaves
            while len(tree) > FAN:  # wrap every FAN items into one chunk (a list)
                tree = [tree[k : k + FAN] for k in range(0, len(tree), FAN)]
            self._place(gid, tree, where)
        return where

    def _place(self, gid: str, items: list[Any], where: dict[str, str]) -> None:
        for item in items:
            if isinstance(item, tuple):
                where[item[1]] = gid
            else:
                first, last = item, item
                while isinstance(first, list):
                    first, last = first[0], last[-1]
                sub = self._new(f"ops {first[0]}\u2013{last[0]}", "chunk", gid)
                self._place(sub, item, where)

    def finish(self, members: dict[str, str]) -> None:
        """Record each node's group (``members``: node -> group) and the subtree sizes."""
        for node, gid in members.items():
            self.by_id[gid].nodes.append(node)
        for g in sorted(self.by_id.values(), key=lambda g: -g.depth):
            g.size += len(g.nodes)
            if g.parent is not None:
                self.by_id[g.parent].size += g.size

    def chain(self, gid: str) -> list[str]:
        """``gid`` and its ancestors, innermost first."""
        out = []
        while gid is not None:
            out.append(gid)
            gid = self.by_id[gid].parent  # type: ignore[assignment]
        return out

    def common(self, gids: list[str]) -> str:
        """The innermost group holding all of ``gids`` (the root for none)."""
        if not gids:
            return "g0"
        shared = self.chain(gids[0])
        for gid in gids[1:]:
            ancestors = set(self.chain(gid))
            shared = [g for g in shared if g in ancestors]
        return shared[0]


def plan_views(groups: Groups) -> dict[str, dict[str, Any]]:
    """Views to lay out: ``view group -> {"open": groups drawn as clusters, "portals": ...}``."""
    views: dict[str, dict[str, Any]] = {}
    todo = ["g0"]
    while todo:
        vid = todo.pop(0)
        open_, portals = [vid], []
        stack = list(groups.by_id[vid].children)
        share = VIEW_LIMIT // max(1, len(stack))
        fits = groups.by_id[vid].size <= VIEW_LIMIT
        while stack:
            gid = stack.pop(0)
            if fits or groups.by_id[gid].size <= share:
                open_.append(gid)
                stack.extend(groups.by_id[gid].children)
            else:
                portals.append(gid)
                todo.append(gid)
        views[vid] = {"open": open_, "portals": portals}
    return views


def label(info: dict[str, Any]) -> str:
    """A node's label: the op with its attributes, or a tensor's name, shape and dtype."""
    return info["label"] if "label" in info else f"{info['name']}\n{info['shape']} {info['dtype']}"


def _q(text: str) -> str:
    """A DOT double-quoted string; ``\\n`` in ``text`` stays a line break."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def view_dot(
    vid: str,
    view: dict[str, Any],
    groups: Groups,
    nodes: dict[str, dict[str, Any]],
    edges: list[tuple[str, str]],
    portal_label: dict[str, str],
) -> str:
    """The DOT text of one view. Each edge joins what the view draws for its ends: the node
    itself, the portal of the group holding it, or a dashed stub of a node outside."""
    opened, portals = set(view["open"]), set(view["portals"])
    rep: dict[str, str | None] = {}

    def rep_of(node: str) -> str | None:
        """What this view draws for ``node``: itself, a portal, or None (outside the view)."""
        if node not in rep:
            chain = groups.chain(nodes[node]["g"])
            rep[node] = None
            if vid in chain:
                inside = chain[: chain.index(vid)]
                rep[node] = next((g for g in reversed(inside) if g in portals), node)
        return rep[node]

    shown: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    stubs: list[str] = []
    for tail, head in edges:
        a, b = rep_of(tail), rep_of(head)
        if a is None and b is None:
            continue
        if a is None or b is None:
            stub = tail if a is None else head
            if stub not in stubs:
                stubs.append(stub)
            a, b = a or tail, b or head
        if a != b and (a, b) not in seen:
            seen.add((a, b))
            shown.append((a, b))
    lines = [f"digraph {_q(vid)} {{",
             '  graph [fontname=Helvetica fontsize=10 nodesep=0.25 ranksep=0.3 ordering=in];',
             '  node [fontname=Helvetica fontsize=10 margin="0.08,0.03"];']  # fmt: skip

    def emit(gid: str, indent: str) -> None:
        g = groups.by_id[gid]
        for node in g.nodes:
            info = nodes[node]
            shape = "ellipse" if info["k"] == "op" else "box"
            lines.append(f"{indent}{_q(node)} [label={_q(label(info))} shape={shape}];")
        for child in g.children:
            if child in portals:
                lines.append(f"{indent}{_q(child)} [label={_q(portal_label[child])} shape=box];")
            elif child in opened:
                lines.append(f"{indent}subgraph {_q('cluster_' + child)} {{")
                lines.append(f"{indent}  label={_q(groups.by_id[child].name)}; labeljust=l;")
                emit(child, indent + "  ")
                lines.append(f"{indent}}}")

    emit(vid, "  ")
    for stub in stubs:
        lines.append(f"  {_q(stub)} [label={_q(label(nodes[stub]))} shape=box style=dashed];")
    lines.extend(f"  {_q(a)} -> {_q(b)};" for a, b in shown)
    lines.append("}")
    return "\n".join(lines)


def run_dot(sources: list[str]) -> list[dict[str, Any]]:
    """Lay out every graph with one ``dot -Tjson0`` run; return the parsed layouts in order."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizNotFoundError(
            "explore: the Graphviz program 'dot' lays out the page and was not found on PATH; "
            + INSTALL_HINT.split(", or write")[0]
        )
    done = subprocess.run([exe, "-Tjson0"], input="\n".join(sources).encode(),
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"explore: dot failed: {done.stderr.decode(errors='replace')[-500:]}")
    text, pos, out = done.stdout.decode(), 0, []
    decoder = json.JSONDecoder()
    while len(out) < len(sources):
        while text[pos].isspace():
            pos += 1
        obj, pos = decoder.raw_decode(text, pos)
        out.append(obj)
    return out


def _pts(text: str, height: float) -> list[float]:
    """``"x,y x,y ..."`` in whole points, y flipped to point down as in SVG."""
    flat = []
    for pair in text.split():
        x, y = pair.split(",")
        flat += [round(float(x)), round(height - float(y))]
    return flat


def compact(layout: dict[str, Any]) -> dict[str, Any]:
    """The parts of a ``json0`` layout the page draws: size, nodes, clusters, edge paths."""
    _, _, w, h = (float(v) for v in layout["bb"].split(","))
    out: dict[str, Any] = {"w": round(w), "h": round(h), "nodes": [], "clusters": [],
                           "edges": []}  # fmt: skip
    names = {}
    for obj in layout.get("objects", []):
        if "bb" in obj:  # a cluster: id, x, y (top), width, height
            x1, y1, x2, y2 = (float(v) for v in obj["bb"].split(","))
            out["clusters"].append(
                [
                    obj["name"].removeprefix("cluster_"),
                    round(x1, 1),
                    round(h - y2, 1),
                    round(x2 - x1, 1),
                    round(y2 - y1, 1),
                ]
            )
            continue
        names[obj["_gvid"]] = obj["name"]
        x, y = _pts(obj["pos"], h)
        out["nodes"].append([obj["name"], x, y, round(float(obj["width"]) * 72),
                             round(float(obj["height"]) * 72)])  # fmt: skip
    for e in layout.get("edges", []):
        parts = e["pos"].split()
        end = _pts(parts[0][2:], h) if parts[0].startswith("e,") else None
        pts = _pts(" ".join(p for p in parts if p[:2] not in ("e,", "s,")), h)
        path = f"M{pts[0]} {pts[1]}C" + " ".join(f"{v}" for v in pts[2:])
        if end:
            path += f"L{end[0]} {end[1]}"
        out["edges"].append([names[e["tail"]], names[e["head"]], path])
    return out
