// The tinygrad_cnn graph explorer: draws the views laid out by Graphviz (data inlined in the
// page as JSON) and makes them interactive. No library, no network.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("explorer-data").textContent);
  const NS = "http://www.w3.org/2000/svg"; // the SVG namespace name, never fetched
  const LINE = 12; // px between label lines
  const TICK = 150; // ms between frames of the backward playback
  const S = { view: null, folded: new Set(), step: 0, timer: null, done: [], scale: 1 };
  const api = { data: D, state: S, ready: false, highlighted: S.done };
  for (const id in D.nodes) if (D.nodes[id].v === undefined) D.nodes[id].v = D.nodes[id].g;
  window.explorer = api;
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function chain(gid) { // gid and its ancestors, innermost first
    const out = [];
    for (let g = gid; g != null; g = D.groups[g].parent) out.push(g);
    return out;
  }
  function inView(gid) { // groups between gid and the view (view excluded), outermost first
    const c = chain(gid), i = c.indexOf(S.view);
    return i < 0 ? [] : c.slice(0, i).reverse();
  }
  function label0(n) { return n.label || `${n.name}\n${n.shape} ${n.dtype}`; }
  function stats(a) { // the packed [n, zeros, nan, inf, min, max, mean, std, hist]
    const k = ["n", "zeros", "nan", "inf", "min", "max", "mean", "std", "hist"], s = {};
    k.forEach((key, i) => { s[key] = a[i]; });
    if (!s.hist && s.n === 1) s.hist = [1];
    return s;
  }
  function fmt(v) { return typeof v === "number" ? String(v) : v === undefined ? "-" : v; }

  // ------------------------------------------------------------------------------ drawing
  function label(g, lines, x, y) {
    const top = y - ((lines.length - 1) * LINE) / 2 + 4;
    lines.forEach((line, i) => {
      const t = el("text", { x: x, y: top + i * LINE }, g);
      t.textContent = line;
    });
  }

  function render(vid) {
    S.view = vid;
    const V = D.views[vid], canvas = $("canvas");
    canvas.textContent = "";
    const svg = el("svg", { id: "graph", viewBox: `0 0 ${V.w + 8} ${V.h + 8}`,
      width: V.w + 8, height: V.h + 8 }, canvas);
    S.scale = 1;
    el("path", { d: "M0,0 L8,4 L0,8 z" }, el("marker", {
      id: "arrow", viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 7, markerHeight: 7,
      orient: "auto-start-reverse" }, el("defs", {}, svg)));
    const root = el("g", { transform: "translate(4,4)" }, svg);
    const layers = ["clusters", "edges", "links", "nodes", "norms"].map(
      (name) => el("g", { class: name }, root));
    for (const [gid, x, y, w, h] of V.clusters) {
      const g = el("g", { id: gid, class: "cluster" }, layers[0]);
      g.dataset.box = [x, y, w, h].join(",");
      el("rect", { x: x, y: y, width: w, height: h, rx: 6 }, g);
      el("text", { x: x + 8, y: y + 14, class: "title" }, g);
      el("g", { class: "summary" }, g);
      g.addEventListener("click", (ev) => { // the title folds, a folded box unfolds
        if (!ev.target.classList.contains("title") && !S.folded.has(gid)) return;
        ev.stopPropagation();
        toggle(gid);
      });
    }
    for (const [a, b, d] of V.edges) {
      const p = el("path", { d: d, class: "edge", id: `${a}>${b}`, "marker-end": "url(#arrow)" },
        layers[1]);
      p.dataset.a = a; p.dataset.b = b;
    }
    for (const [id, x, y, w, h] of V.nodes) {
      const portal = id in D.groups, info = portal ? D.groups[id] : D.nodes[id];
      const kind = portal ? "portal" : info.k, stub = !portal && info.v !== vid;
      const g = el("g", { id: id, class: `node ${kind}${stub ? " stub" : ""}` }, layers[3]);
      g.dataset.box = [x, y, w, h].join(",");
      if (kind === "op") el("ellipse", { cx: x, cy: y, rx: w / 2, ry: h / 2 }, g);
      else el("rect", { x: x - w / 2, y: y - h / 2, width: w, height: h, rx: 3 }, g);
      label(g, (portal ? info.label : label0(info)).split("\n"), x, y);
      g.addEventListener("click", (ev) => {
        ev.stopPropagation();
        if (portal) { go(id); return; }
        if (stub) { reveal(id); return; }
        select(id);
      });
    }
    const depth = V.nodes.length > D.openFolded ? 0 : "";
    $("depth").value = depth;
    setDepth(depth);
    crumbs();
  }

  function box(id) { // [x, y, w, h] with (x, y) the centre, of a node or a folded cluster
    const b = document.getElementById(id).dataset.box.split(",").map(Number);
    if (id in D.groups && !D.views[S.view].portals.includes(id)) {
      const h = Math.min(b[3], 64);
      return [b[0] + b[2] / 2, b[1] + h / 2, b[2], h];
    }
    return b;
  }
  function clip(b, tx, ty) { // where the line from the centre of b to (tx, ty) leaves b
    const [x, y, w, h] = b, dx = tx - x, dy = ty - y;
    const s = Math.min(Math.abs(dx) > 0 ? w / 2 / Math.abs(dx) : Infinity,
      Math.abs(dy) > 0 ? h / 2 / Math.abs(dy) : Infinity, 1);
    return [x + dx * s, y + dy * s];
  }

  // ------------------------------------------------------------------------------ folding
  function rep(id) { // what is drawn for node id now: itself or its outermost folded cluster
    return folder(id in D.groups ? id : D.nodes[id].g) || id;
  }
  function folder(gid) { // the outermost folded group among gid and its ancestors in the view
    for (const g of inView(gid)) if (S.folded.has(g)) return g;
    return null;
  }
  function applyFolds() {
    const svg = $("graph");
    for (const c of svg.querySelectorAll(".cluster")) {
      const gid = c.id, folded = S.folded.has(gid);
      c.classList.toggle("hidden", folder(D.groups[gid].parent) !== null);
      c.classList.toggle("folded", folded);
      c.querySelector(".title").textContent = (folded ? "\u25B8 " : "\u25BE ") +
        D.groups[gid].name;
      const [x, y, w, h] = c.dataset.box.split(",").map(Number), rect = c.querySelector("rect");
      rect.setAttribute("height", folded ? Math.min(h, 64) : h);
      const summary = c.querySelector(".summary");
      summary.textContent = "";
      if (folded) label(summary, D.groups[gid].label.split("\n").slice(1), x + w / 2,
        y + Math.min(h, 64) / 2 + 6);
    }
    for (const n of svg.querySelectorAll(".node")) {
      const portal = n.id in D.groups;
      n.classList.toggle("hidden", portal ? folder(D.groups[n.id].parent) !== null
        : D.nodes[n.id].v === S.view && rep(n.id) !== n.id);
    }
    const links = svg.querySelector(".links"), seen = new Set();
    links.textContent = "";
    for (const p of svg.querySelectorAll(".edge")) {
      const a = rep(p.dataset.a), b = rep(p.dataset.b), direct = a === p.dataset.a &&
        b === p.dataset.b;
      p.classList.toggle("hidden", !direct);
      if (direct || a === b || seen.has(a + ">" + b)) continue;
      seen.add(a + ">" + b);
      const ba = box(a), bb = box(b), [x1, y1] = clip(ba, bb[0], bb[1]);
      const [x2, y2] = clip(bb, ba[0], ba[1]);
      el("path", { d: `M${x1} ${y1}L${x2} ${y2}`, class: "link", "marker-end": "url(#arrow)" },
        links);
    }
    paintBackward();
  }
  function toggle(gid) {
    if (S.folded.has(gid)) S.folded.delete(gid); else S.folded.add(gid);
    applyFolds();
    if (S.folded.has(gid)) showGroup(gid);
  }
  function setDepth(d) { // fold every cluster more than d levels below the view
    S.folded.clear();
    if (d !== "" && d !== null) {
      const base = D.groups[S.view].depth;
      for (const [gid] of D.views[S.view].clusters) {
        if (D.groups[gid].depth - base > Number(d)) S.folded.add(gid);
      }
    }
    applyFolds();
  }

  // ---------------------------------------------------------------------------- the panel
  function hist(stats) {
    const bins = stats.hist;
    if (!bins) return null;
    const w = 160, h = 36, svg = el("svg", { class: "hist", width: w, height: h + 12 });
    const top = Math.max(...bins), bw = w / bins.length;
    bins.forEach((n, i) => {
      const bh = top ? Math.max(n ? 1 : 0, (h * n) / top) : 0;
      el("rect", { x: i * bw + 0.5, y: h - bh, width: bw - 1, height: bh }, svg);
    });
    const lo = el("text", { x: 0, y: h + 11 }, svg);
    const hi = el("text", { x: w, y: h + 11, class: "hi" }, svg);
    lo.textContent = fmt(stats.min); hi.textContent = fmt(stats.max);
    return svg;
  }
  function section(panel, title, rows, extra) {
    const h = document.createElement("h3");
    h.textContent = title;
    panel.appendChild(h);
    const table = document.createElement("table");
    for (const [k, v] of rows) {
      const tr = table.insertRow();
      tr.insertCell().textContent = k;
      const td = tr.insertCell();
      td.textContent = v;
      td.className = k.replace(/\W+/g, "-");
    }
    panel.appendChild(table);
    if (extra) panel.appendChild(extra);
  }
  function statRows(s) {
    const rows = [["min", fmt(s.min)], ["max", fmt(s.max)], ["mean", fmt(s.mean)],
      ["std", fmt(s.std)], ["zeros", `${(100 * s.zeros).toPrecision(3)} %`]];
    if (s.nan || s.inf) rows.push(["NaN / Inf", `${s.nan} / ${s.inf}`]);
    return rows;
  }
  function select(id) {
    for (const e of document.querySelectorAll(".selected")) e.classList.remove("selected");
    const node = document.getElementById(id);
    if (node) node.classList.add("selected");
    const n = D.nodes[id], panel = $("panel");
    panel.textContent = "";
    panel.dataset.node = id;
    if (n.k === "op") {
      const rows = [["op", n.label.split(" ")[0]], ["node", id], ["module", n.scope || "-"]];
      for (const k in n.attrs) rows.push([k, n.attrs[k]]);
      n.ins.forEach(([s, t], i) => rows.push([`input ${i}`, `${s} ${t}`]));
      rows.push(["output", `${n.out[0]} ${n.out[1]}`]);
      if (n.site) rows.push(["created at", n.site]);
      if (n.audit) rows.push(["audit", `${n.audit.status} (${n.audit.check}, rel. error ` +
        `${fmt(n.audit.error)})${n.audit.note ? ": " + n.audit.note : ""}`]);
      section(panel, n.label, rows);
      return;
    }
    const rows = [["kind", n.k], ["node", id], ["shape", n.shape], ["dtype", n.dtype]];
    if (n.module !== undefined) rows.push(["parameter of", n.module || "-"]);
    if (n.site) rows.push(["created at", n.site]);
    section(panel, n.name, rows);
    const v = stats(n.stats), g = n.grad && stats(n.grad);
    section(panel, "values", statRows(v), hist(v));
    if (g) section(panel, "gradient", statRows(g), hist(g));
    else section(panel, "gradient", [["", "no gradient reaches it"]]);
  }
  function showGroup(gid) {
    const g = D.groups[gid], panel = $("panel");
    panel.textContent = "";
    panel.dataset.node = gid;
    const shapes = (ids, n) => ids.map((i) => D.nodes[i].shape).join(" ") +
      (n > ids.length ? ` +${n - ids.length}` : "");
    section(panel, g.name, [["kind", g.kind], ["ops", g.ops], ["nodes", g.size],
      ["module", modulePath({ g: gid }) || "-"],
      ["inputs", shapes(g.ins, g.nins) || "-"], ["outputs", shapes(g.outs, g.nouts) || "-"]]);
  }

  // --------------------------------------------------------------- views, crumbs, search
  function go(vid) { render(vid); showGroup(vid); }
  function crumbs() {
    const c = $("crumbs");
    c.textContent = "";
    chain(S.view).reverse().filter((g) => g in D.views).forEach((g) => {
      const a = document.createElement("a");
      a.textContent = D.groups[g].name;
      a.href = "#";
      a.addEventListener("click", (ev) => { ev.preventDefault(); go(g); });
      c.appendChild(a);
    });
  }
  function reveal(id) { // open the view holding node id, unfold its clusters, select it
    const n = D.nodes[id];
    if (S.view !== n.v) render(n.v);
    for (const g of inView(n.g)) S.folded.delete(g);
    applyFolds();
    select(id);
    document.getElementById(id).scrollIntoView({ block: "center", inline: "center" });
  }
  function modulePath(n) { // "SimpleConvNet.conv1": the modules holding a node, outermost first
    return chain(n.g).reverse().filter((g) => D.groups[g].kind === "module")
      .map((g) => D.groups[g].name).join(".");
  }
  function rank(id, n, q) { // 0 exact id or name, 1 name starts with q, 2 name holds q,
    // 3 only the module path holds q, -1 no match. Shapes and dtypes are not searched.
    const name = (n.k === "op" ? n.label : n.name).toLowerCase();
    const words = [name, ...(n.k === "op" ? [name.split(" ")[0]] : [])];
    if (id.toLowerCase() === q || words.includes(q)) return 0;
    if (name.startsWith(q)) return 1;
    if (name.includes(q)) return 2;
    return modulePath(n).toLowerCase().includes(q) ? 3 : -1;
  }
  function search(text) {
    const q = text.trim().toLowerCase(), list = $("results"), max = 50;
    list.textContent = "";
    list.hidden = !q;
    if (!q) return;
    const found = [];
    for (const id in D.nodes) {
      const r = rank(id, D.nodes[id], q);
      if (r >= 0) found.push([r, Number(id.slice(1)), id]);
    }
    found.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    for (const [, , id] of found.slice(0, max)) {
      const n = D.nodes[id], li = list.appendChild(document.createElement("li"));
      const what = n.k === "op" ? n.label : `${n.name} ${n.shape}`;
      li.textContent = `${id.padEnd(6)} ${what}  `;
      const where = li.appendChild(document.createElement("span"));
      where.className = "where";
      where.textContent = modulePath(n) || "(top level)";
      li.addEventListener("click", () => { list.hidden = true; reveal(id); });
    }
    const note = list.appendChild(document.createElement("li"));
    note.className = "note";
    note.textContent = !found.length ? "no match"
      : found.length > max ? `${max} of ${found.length} shown: type more to narrow`
        : `${found.length} match${found.length === 1 ? "" : "es"}`;
  }

  // ------------------------------------------------------------------------ backward
  function paintBackward() {
    const svg = $("graph"), norms = svg.querySelector(".norms");
    for (const e of svg.querySelectorAll(".bw-done, .bw-now")) {
      e.classList.remove("bw-done", "bw-now");
    }
    norms.textContent = "";
    S.done.forEach((op, i) => {
      const r = document.getElementById(rep(op));
      if (r) r.classList.add(i === S.done.length - 1 ? "bw-now" : "bw-done");
    });
    const done = new Set(S.done);
    for (const p of svg.querySelectorAll(".edge:not(.hidden)")) {
      const a = p.dataset.a, b = p.dataset.b, key = `${a}>${b}`;
      // A tensor -> op edge carries that op's input gradient, op -> tensor its output's.
      if (!(key in D.norms) || !done.has(D.nodes[a].k === "op" ? a : b)) continue;
      const mid = p.getPointAtLength(p.getTotalLength() / 2);
      const t = el("text", { x: mid.x + 4, y: mid.y }, norms);
      t.textContent = Number(D.norms[key]).toExponential(2);
    }
    $("bw-status").textContent = D.order.length ? `${S.done.length}/${D.order.length}` +
      (S.done.length ? " " + D.nodes[S.done[S.done.length - 1]].label : "") : "no gradient";
  }
  function step(k = 1) { // compute the next k ops' gradients; false at the end
    if (S.done.length >= D.order.length) { pause(); return false; }
    S.done.push(...D.order.slice(S.done.length, S.done.length + k));
    paintBackward();
    return true;
  }
  function pause() { clearInterval(S.timer); S.timer = null; $("bw-play").textContent = "play"; }
  function play() { // one op per tick, or several, so the pass takes at most the chosen time
    if (S.timer) { pause(); return; }
    if (S.done.length >= D.order.length) S.done.length = 0;
    $("bw-play").textContent = "pause";
    const ticks = Math.max(1, (Number($("bw-speed").value) * 1000) / TICK);
    const k = Math.ceil(D.order.length / ticks);
    api.ticks = 0;
    S.timer = setInterval(() => { api.ticks++; step(k); }, TICK);
  }

  // ------------------------------------------------------------------------------ wiring
  $("bw-play").addEventListener("click", play);
  $("bw-step").addEventListener("click", () => { pause(); step(); });
  $("bw-end").addEventListener("click", () => { pause(); step(D.order.length); });
  $("bw-reset").addEventListener("click", () => { pause(); S.done.length = 0; paintBackward(); });
  $("depth").addEventListener("change", (ev) => setDepth(ev.target.value));
  let pending = null;
  $("search").addEventListener("input", (ev) => {
    clearTimeout(pending);
    pending = setTimeout(() => search(ev.target.value), 120);
  });
  $("canvas").addEventListener("wheel", (ev) => {
    if (!ev.ctrlKey) return;
    ev.preventDefault();
    S.scale = Math.min(4, Math.max(0.1, S.scale * (ev.deltaY < 0 ? 1.1 : 1 / 1.1)));
    const g = $("graph"), V = D.views[S.view];
    g.setAttribute("width", (V.w + 8) * S.scale);
    g.setAttribute("height", (V.h + 8) * S.scale);
  }, { passive: false });
  document.title = D.title;
  render("g0");
  api.ready = true;
  api.readyAt = performance.now();
  document.body.dataset.ready = "1";
})();
