// The attributions of an explanation drawn in the page, with our own SVG and canvas (no third-party code):
// horizontal bars per feature with the base value and the prediction, or a heat map for an image. Every name
// and number from the answer is set as text.
"use strict";

window.MlportAttributions = (() => {
  const C = window.MlportConsole;
  const SVG = "http://www.w3.org/2000/svg";
  const MAX_BARS = 20;
  const MAX_OPTIONS = 100;
  const MAX_MAP_SIDE = 1024;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function num(x) {
    return typeof x === "number" ? String(Number(x.toPrecision(4))) : String(x);
  }

  function topBars(features, values) {
    // [name, value] by decreasing size, at most MAX_BARS; the rest summed in one bar
    const pairs = features.map((f, i) => [String(f), Number(values[i])]).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
    if (pairs.length <= MAX_BARS) return pairs;
    const rest = pairs.slice(MAX_BARS - 1);
    return [...pairs.slice(0, MAX_BARS - 1), ["(" + rest.length + " other features)", rest.reduce((s, p) => s + p[1], 0)]];
  }

  function bars(title, features, values) {
    const pairs = topBars(features, values);
    const labelW = 200, barW = 330, valueW = 70, rowH = 22, top = 8;
    const lo = Math.min(0, ...pairs.map((p) => p[1])), hi = Math.max(0, ...pairs.map((p) => p[1]));
    const span = hi - lo || 1;
    const x = (v) => labelW + barW * (v - lo) / span;
    const h = top + rowH * pairs.length + 6;
    const chart = svg("svg", { viewBox: "0 0 " + (labelW + barW + valueW) + " " + h, class: "bars", role: "img",
      "aria-label": title });
    chart.appendChild(svg("line", { x1: x(0), x2: x(0), y1: 2, y2: h - 2, class: "zero" }));
    pairs.forEach(([name, value], i) => {
      const y = top + i * rowH;
      const label = svg("text", { x: labelW - 6, y: y + 14, "text-anchor": "end", class: "feature" },
        name.length > 26 ? name.slice(0, 25) + "..." : name);
      label.appendChild(svg("title", {}, name));
      const rect = svg("rect", { x: Math.min(x(0), x(value)), y: y + 3, height: rowH - 6,
        width: Math.max(Math.abs(x(value) - x(0)), 1), class: value >= 0 ? "up" : "down" });
      rect.appendChild(svg("title", {}, name + ": " + num(value)));
      chart.append(label, rect, svg("text", { x: labelW + barW + 4, y: y + 14, class: "value" }, num(value)));
    });
    return chart;
  }

  function heatmap(rowMap) {
    // a 2-D map (further dimensions summed): red where it raised the output, blue where it lowered it
    const plane = rowMap.map((line) => line.map((v) => (Array.isArray(v) ? v.flat(Infinity).reduce((s, x) => s + Number(x), 0) : Number(v))));
    const hgt = Math.min(plane.length, MAX_MAP_SIDE), wid = Math.min((plane[0] || []).length, MAX_MAP_SIDE);
    const canvas = C.el("canvas", { width: wid, height: hgt, class: "heatmap", role: "img", "aria-label": "heat map" });
    const max = Math.max(1e-12, ...plane.slice(0, hgt).map((l) => Math.max(...l.slice(0, wid).map(Math.abs))));
    const g = canvas.getContext("2d");
    const img = g.createImageData(wid, hgt);
    for (let i = 0; i < hgt; i++) {
      for (let j = 0; j < wid; j++) {
        const v = plane[i][j] / max, at = 4 * (i * wid + j);
        img.data[at] = v > 0 ? 255 : 255 * (1 + v);
        img.data[at + 1] = 255 * (1 - Math.abs(v));
        img.data[at + 2] = v < 0 ? 255 : 255 * (1 - v);
        img.data[at + 3] = 255;
      }
    }
    g.putImageData(img, 0, 0);
    return canvas;
  }

  function select(label, items, onChange) {
    const node = C.el("select", { "aria-label": label, onchange: onChange });
    items.slice(0, MAX_OPTIONS).forEach((text, i) => node.appendChild(C.el("option", { value: String(i), text })));
    return C.el("label", {}, label + " ", node);
  }

  function showJson(box, a) {
    const outputs = Array.isArray(a.outputs) ? a.outputs : [];
    const limits = a.limits || {};
    box.appendChild(C.el("p", { class: "explain-facts", text: "method " + a.method + ", model " + a.model_name + " version " +
      a.model_version + " - " + limits.rows + " rows, " + limits.evaluations + " evaluations, " + num(limits.seconds) + " s" }));
    if (!outputs.length) { box.appendChild(C.el("p", { text: "the explanation has no output" })); return; }
    const view = C.el("div", { class: "explain-view" });
    let o = 0, row = 0;
    const draw = () => {
      view.textContent = "";
      const out = outputs[o];
      const base = (out.base_value || [])[row], pred = (out.prediction || [])[row];
      const what = String(out.name) + (out.element === null || out.element === undefined ? "" : " [" + String(out.element) + "]");
      view.appendChild(C.el("p", { class: "explain-base", text: what + ": base value " + num(base) + ", prediction " + num(pred) }));
      if (out.map) view.appendChild(heatmap(out.map[row] || []));
      else view.appendChild(bars("attributions to " + what, a.features || [], (out.values || [])[row] || []));
    };
    const rows = (outputs[0].prediction || []).map((_, i) => "row " + (i + 1));
    const controls = C.el("p", { class: "bar" });
    if (outputs.length > 1) controls.appendChild(select("output", outputs.map((x) => String(x.name) +
      (x.element === null || x.element === undefined ? "" : " [" + String(x.element) + "]")), (e) => { o = Number(e.target.value); draw(); }));
    if (rows.length > 1) controls.appendChild(select("row", rows, (e) => { row = Number(e.target.value); draw(); }));
    box.append(controls, view);
    draw();
  }

  return { show: showJson, bars, heatmap };
})();
