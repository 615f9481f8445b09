"""The explorer's data: every node with its statistics, the groups, and the laid-out views."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..audit import AuditReport
from ..autograd import Function
from ..tensor import Tensor
from ..viz import graph_tensors, node_ids, op_label
from .layout import Groups, compact, plan_views, run_dot, view_dot
from .stats import backward_record, num, pack, summarize

#: Where each op recorded under ``record_sites()`` was created: ``file:line in function``.
SITES: weakref.WeakKeyDictionary[Function, str] = weakref.WeakKeyDictionary()
#: Views with more nodes than this open with their top-level modules folded.
OPEN_FOLDED = 150
#: Inputs and outputs listed on a folded module (the rest are counted).
MAX_PORTS = 4


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(n) for n in t.shape) + ("," if t.ndim == 1 else "") + ")"


def _attr_text(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    text = f"array{value.shape} {value.dtype}" if isinstance(value, np.ndarray) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _audit_rows(audit: AuditReport | None, op_ids: dict[int, str], fns: list[Function]) -> dict:
    """Audit verdicts by op node id, after checking the report is about this graph."""
    if audit is None:
        return {}
    if not isinstance(audit, AuditReport):
        raise TypeError(f"explore: audit must be an AuditReport, got {type(audit).__name__}")
    labels = {op_ids[id(fn)]: op_label(fn) for fn in fns}
    rows = {}
    for row in audit.rows:
        if labels.get(row.node) != row.op:
            raise ValueError(
                f"explore: the audit report is of another graph (its node {row.node} is "
                f"{row.op!r}, here it is {labels.get(row.node)!r}); audit this root"
            )
        rows[row.node] = {"status": row.status, "check": row.check,
                          "error": float(f"{row.error:.3g}") if row.error == row.error else None,
                          "note": row.note}  # fmt: skip
    return rows


def page_data(
    roots: Sequence[Tensor], audit: AuditReport | None = None, title: str = "tinygrad_cnn graph"
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data: nodes, groups, laid-out views, the
    backward order and the gradient norms on the edges (see ``explore``)."""
    tensors = graph_tensors(*roots)
    op_ids, t_ids = node_ids(tensors)
    fns = [t._ctx for t in tensors if t._ctx is not None]
    verdicts = _audit_rows(audit, op_ids, fns)
    order, grads, norms = backward_record(roots, tensors)
    root_ids = {id(r) for r in roots}

    groups = Groups()
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[tuple[str, str]] = []
    consumers: dict[str, list[str]] = {}
    for k, t in enumerate(tensors):
        fn, tid = t._ctx, t_ids[id(t)]
        if fn is not None:
            op = op_ids[id(fn)]
            groups.add_op(op, tuple(fn.scope))
            nodes[op] = {"k": "op", "label": op_label(fn),
                         "ins": [[_shape(p), str(p.dtype)] for p in fn.parents],
                         "out": [_shape(t), str(t.dtype)]}  # fmt: skip
            if fn.attrs():
                nodes[op]["attrs"] = {a: _attr_text(v) for a, v in fn.attrs().items()}
            if fn.scope:
                nodes[op]["scope"] = ".".join(fn.scope)
            if fn in SITES:
                nodes[op]["site"] = SITES[fn]
            if op in verdicts:
                nodes[op]["audit"] = verdicts[op]
            for p in fn.parents:
                edges.append((t_ids[id(p)], op))
                consumers.setdefault(t_ids[id(p)], []).append(op)
            edges.append((op, tid))
        kind = ("root" if id(t) in root_ids else "tensor" if fn is not None
                else "param" if t.requires_grad else "input")  # fmt: skip
        title_ = t.name or ("loss" if kind == "root" and t.size == 1 else f"t{k}")
        nodes[tid] = {"k": kind, "name": title_, "shape": _shape(t), "dtype": str(t.dtype),
                      "stats": pack(summarize(t.numpy()))}  # fmt: skip
        if id(t) in grads:
            nodes[tid]["grad"] = pack(grads[id(t)])
        if fn is not None and fn in SITES:
            nodes[tid]["site"] = SITES[fn]

    where = groups.chunk()
    members = {node: where[node] for node, info in nodes.items() if info["k"] == "op"}
    for a, b in edges:
        if nodes[a]["k"] == "op":
            members[b] = where[a]  # an op's output sits with its op
    for node in nodes:
        if node not in members:  # a parameter or a constant sits with the ops that use it
            info = nodes[node]
            data_input = info["k"] == "input" and info["stats"][0] > 1
            uses = [] if data_input else [where[op] for op in consumers.get(node, [])]
            members[node] = groups.common(uses)
        nodes[node]["g"] = members[node]
    for t in tensors:  # a parameter's module path
        info = nodes[t_ids[id(t)]]
        if info["k"] == "param" and t.name:
            scopes = [nodes[op].get("scope", "") for op in consumers.get(t_ids[id(t)], [])]
            info["module"] = next((s for s in scopes if s), "")
    groups.finish(members)
    return _finish(groups, nodes, edges, order, norms, op_ids, t_ids, title)


def plural(n: int, word: str) -> str:
    """``"1 op"``, ``"2 ops"``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def _ports(groups: Groups, nodes: dict, edges: list[tuple[str, str]]) -> dict[str, dict]:
    """The tensors flowing into and out of every group, by group id."""
    ports: dict[str, dict[str, list[str]]] = {g: {"ins": [], "outs": []} for g in groups.by_id}
    for a, b in edges:
        if nodes[a]["k"] == "op":
            continue
        ca, cb = groups.chain(nodes[a]["g"]), groups.chain(nodes[b]["g"])
        for g in set(cb) - set(ca):
            if a not in ports[g]["ins"]:
                ports[g]["ins"].append(a)
        for g in set(ca) - set(cb):
            if a not in ports[g]["outs"]:
                ports[g]["outs"].append(a)
    return ports


def _finish(
    groups: Groups,
    nodes: dict[str, dict[str, Any]],
    edges: list[tuple[str, str]],
    order: list[Function],
    norms: dict[tuple[int, int], float],
    op_ids: dict[int, str],
    t_ids: dict[int, str],
    title: str,
) -> dict[str, Any]:
    """Lay out the views and put the page's data together."""
    ports = _ports(groups, nodes, edges)
    ops_in: dict[str, int] = dict.fromkeys(groups.by_id, 0)
    for info in nodes.values():
        if info["k"] == "op":
            for g in groups.chain(info["g"]):
                ops_in[g] += 1
    gdata = {}
    for gid, g in groups.by_id.items():
        ins, outs = ports[gid]["ins"], ports[gid]["outs"]
        gdata[gid] = {**g.json(), "ops": ops_in[gid], "nins": len(ins), "nouts": len(outs),
                      "ins": ins[:MAX_PORTS], "outs": outs[:MAX_PORTS]}  # fmt: skip

    def port_text(ids: list[str], n: int) -> str:
        text = " ".join(nodes[i]["shape"] for i in ids)
        return text + (f" +{n - len(ids)}" if n > len(ids) else "")

    def group_label(d: dict[str, Any]) -> str:
        lines = [f"\u25b8 {d['name']}", plural(d["ops"], "op")]
        if d["nins"]:  # a group fed by nothing outside it (the first chunk) has no "in" line
            lines.append("in " + port_text(d["ins"], d["nins"]))
        if d["nouts"]:
            lines.append("out " + port_text(d["outs"], d["nouts"]))
        return "\n".join(lines)

    labels = {gid: group_label(d) for gid, d in gdata.items()}
    plans = plan_views(groups)
    view_edges: dict[str, list[tuple[str, str]]] = {vid: [] for vid in plans}
    for a, b in edges:  # each edge goes to the views that hold one of its ends
        for vid in dict.fromkeys(groups.chain(nodes[a]["g"]) + groups.chain(nodes[b]["g"])):
            if vid in view_edges:
                view_edges[vid].append((a, b))
    sources = []
    for vid, plan in plans.items():
        sources.append(view_dot(vid, plan, groups, nodes, view_edges[vid], labels))
        for gid in plan["open"]:
            for node in groups.by_id[gid].nodes:
                if gid != vid:  # "v", the view showing the node, is "g" when left out
                    nodes[node]["v"] = vid
    views = {}
    for vid, layout in zip(plans, run_dot(sources), strict=True):
        views[vid] = {**compact(layout), "portals": plans[vid]["portals"]}
    for gid in gdata:
        gdata[gid]["label"] = labels[gid]
    by_id = {**{v: k for k, v in op_ids.items()}, **{v: k for k, v in t_ids.items()}}
    edge_norms = {f"{a}>{b}": num(norms[(by_id[a], by_id[b])]) for a, b in edges
                  if (by_id[a], by_id[b]) in norms}  # fmt: skip
    return {"title": title, "nodes": nodes, "groups": gdata, "views": views,
            "order": [op_ids[id(fn)] for fn in order], "norms": edge_norms,
            "openFolded": OPEN_FOLDED}  # fmt: skip
