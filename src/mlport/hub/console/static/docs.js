// The hub's /docs page: the operations of /openapi.json, grouped by tag.
"use strict";
fetch("/openapi.json").then((r) => r.json()).then((spec) => {
  const byTag = {};
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      (byTag[op.tags[0]] = byTag[op.tags[0]] || []).push([method.toUpperCase(), path, op.summary]);
    }
  }
  const root = document.getElementById("ops");
  root.textContent = "";
  for (const [tag, rows] of Object.entries(byTag)) {
    const h = document.createElement("h2");
    h.textContent = tag;
    root.appendChild(h);
    const t = document.createElement("table");
    for (const [m, p, s] of rows) {
      const tr = t.insertRow();
      tr.insertCell().textContent = m;
      tr.cells[0].className = "m";
      const code = document.createElement("code");
      code.textContent = p;
      tr.insertCell().appendChild(code);
      tr.insertCell().textContent = s;
    }
    root.appendChild(t);
  }
});
