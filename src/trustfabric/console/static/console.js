// trustfabric console: the live parts (decisions over Server-Sent Events, the segment map, overview refresh).
"use strict";

function liveDecisions() {
  const table = document.querySelector("#decisions tbody");
  const status = document.getElementById("status");
  const form = document.getElementById("filter");
  let paused = false, source = null;
  function connect() {
    if (source) source.close();
    const params = new URLSearchParams(new FormData(form));
    source = new EventSource("/decisions/stream?" + params.toString());
    source.onopen = () => { status.textContent = "live"; };
    source.onerror = () => { status.textContent = "reconnecting"; };
    source.onmessage = (event) => {
      if (paused) return;
      const r = JSON.parse(event.data);
      const tr = document.createElement("tr");
      if (r.sampled) tr.className = "sampled";
      const t = new Date(r.time * 1000).toISOString().substring(11, 23);
      for (const v of [t, r.source, r.principal, r.action, r.resource, r.decision, r.reason, r.trace]) {
        const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      }
      if (r.decision === "deny") tr.children[5].className = "bad";
      table.insertBefore(tr, table.firstChild);
      while (table.children.length > 200) table.removeChild(table.lastChild);
    };
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); table.innerHTML = ""; connect(); });
  document.getElementById("pause").addEventListener("click", (e) => {
    paused = !paused; e.target.textContent = paused ? "resume" : "pause"; status.textContent = paused ? "paused" : "live";
  });
  connect();
}

function drawMap(graph) {
  const svg = document.getElementById("map");
  const ns = "http://www.w3.org/2000/svg";
  svg.innerHTML = "";
  const segments = [...new Set(graph.nodes.map((n) => n.segment))].sort();
  const cols = Math.min(5, Math.max(segments.length, 1)), rows = Math.ceil(segments.length / cols);
  const cellW = 1100 / cols, cellH = 560 / Math.max(rows, 1), pos = {};
  segments.forEach((seg, i) => {
    const x0 = (i % cols) * cellW, y0 = Math.floor(i / cols) * cellH;
    const rect = document.createElementNS(ns, "rect");
    Object.entries({ x: x0 + 6, y: y0 + 6, width: cellW - 12, height: cellH - 12, rx: 8, class: "seg" }).forEach(([k, v]) => rect.setAttribute(k, v));
    svg.appendChild(rect);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", x0 + 16); label.setAttribute("y", y0 + 26); label.textContent = "segment " + seg;
    svg.appendChild(label);
    graph.nodes.filter((n) => n.segment === seg).forEach((n, j) => { pos[n.name] = [x0 + cellW / 2, y0 + 70 + j * 48]; });
  });
  function edge(e, cls) {
    const a = pos[e[0]], b = pos[e[1]];
    if (!a || !b) return;
    const line = document.createElementNS(ns, "line");
    Object.entries({ x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: cls }).forEach(([k, v]) => line.setAttribute(k, v));
    line.setAttribute("data-edge", e[0] + "->" + e[1]);
    svg.appendChild(line);
  }
  graph.allowed.forEach((e) => edge(e, "allowed"));
  graph.used.forEach((e) => edge(e, "used"));
  graph.denied.forEach((e) => edge(e, "denied"));
  graph.nodes.forEach((n) => {
    const [x, y] = pos[n.name];
    const g = document.createElementNS(ns, "g");
    g.setAttribute("data-node", n.name);
    const r = document.createElementNS(ns, "rect");
    Object.entries({ x: x - 92, y: y - 15, width: 184, height: 30, rx: 5, class: n.cut_off ? "node cut" : "node" }).forEach(([k, v]) => r.setAttribute(k, v));
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", y + 4); t.setAttribute("text-anchor", "middle");
    t.textContent = n.cut_off ? n.name + " (cut off)" : n.name;
    g.appendChild(r); g.appendChild(t); svg.appendChild(g);
  });
  document.getElementById("cut-off").textContent = graph.cut_off.length ? graph.cut_off.join(", ") : "nobody";
}

function liveMap() {
  drawMap(JSON.parse(document.getElementById("graph").textContent));
  setInterval(() => fetch("/map.json", { credentials: "same-origin" }).then((r) => r.ok ? r.json() : null).then((g) => g && drawMap(g)), 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "/decisions") liveDecisions();
  if (page === "/map") liveMap();
  if (page === "/") setTimeout(() => location.reload(), 5000);
});
