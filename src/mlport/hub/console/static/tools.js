// Small tools of the hub console, written for it: a zip writer (folder uploads), a CSV reader and writer,
// SVG charts, and a bounded load generator. No third-party code.
"use strict";

const MlportTools = (() => {
  // ---------------------------------------------------------------------------------------------- zip (stored)
  const CRC_TABLE = (() => {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();

  function crc32(bytes) {
    let c = 0xffffffff;
    for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  const MAX_ZIP_BYTES = 0xffffffff; // no zip64: a folder of at most 4 GiB (the hub's default upload limit)

  async function zip(files) {
    // files: [[relative path, Blob]]; answers a Blob of a zip archive whose entries are stored uncompressed
    const parts = [];
    const central = [];
    let offset = 0;
    for (const [path, file] of files) {
      const data = new Uint8Array(await file.arrayBuffer());
      const name = new TextEncoder().encode(path);
      const crc = crc32(data);
      const local = new DataView(new ArrayBuffer(30));
      local.setUint32(0, 0x04034b50, true);
      local.setUint16(4, 20, true);
      local.setUint16(6, 0x0800, true); // names in UTF-8
      local.setUint16(12, 0x21, true); // 1980-01-01
      local.setUint32(14, crc, true);
      local.setUint32(18, data.length, true);
      local.setUint32(22, data.length, true);
      local.setUint16(26, name.length, true);
      parts.push(local, name, data);
      const entry = new DataView(new ArrayBuffer(46));
      entry.setUint32(0, 0x02014b50, true);
      entry.setUint16(4, 20, true);
      entry.setUint16(6, 20, true);
      entry.setUint16(8, 0x0800, true);
      entry.setUint16(14, 0x21, true);
      entry.setUint32(16, crc, true);
      entry.setUint32(20, data.length, true);
      entry.setUint32(24, data.length, true);
      entry.setUint16(28, name.length, true);
      entry.setUint32(42, offset, true);
      central.push(entry, name);
      offset += 30 + name.length + data.length;
      if (offset > MAX_ZIP_BYTES) throw new Error("the folder is larger than 4 GiB: upload a .tar.gz instead");
    }
    const centralSize = central.reduce((n, p) => n + p.byteLength, 0);
    const end = new DataView(new ArrayBuffer(22));
    end.setUint32(0, 0x06054b50, true);
    end.setUint16(8, files.length, true);
    end.setUint16(10, files.length, true);
    end.setUint32(12, centralSize, true);
    end.setUint32(16, offset, true);
    return new Blob([...parts, ...central, end], { type: "application/zip" });
  }

  // ---------------------------------------------------------------------------------------------- CSV
  function parseCsv(text, maxRows) {
    // RFC 4180: quoted fields may hold commas, quotes ("") and line breaks; answers {header, rows}
    const records = [];
    let field = "";
    let record = [];
    let quoted = false;
    for (let i = 0; i < text.length; i++) {
      const ch = text[i];
      if (quoted) {
        if (ch === '"' && text[i + 1] === '"') { field += '"'; i++; }
        else if (ch === '"') quoted = false;
        else field += ch;
      } else if (ch === '"') quoted = true;
      else if (ch === ",") { record.push(field); field = ""; }
      else if (ch === "\n" || ch === "\r") {
        if (ch === "\r" && text[i + 1] === "\n") i++;
        record.push(field);
        field = "";
        if (record.length > 1 || record[0] !== "") records.push(record);
        record = [];
        if (records.length > maxRows) throw new Error("the file has more than " + maxRows + " rows");
      } else field += ch;
    }
    if (field !== "" || record.length) { record.push(field); records.push(record); }
    if (!records.length) throw new Error("the file is empty");
    const header = records[0].map((h) => h.trim());
    const rows = records.slice(1);
    rows.forEach((r, i) => {
      if (r.length !== header.length) throw new Error("row " + (i + 2) + " has " + r.length + " fields, the header " + header.length);
    });
    return { header, rows };
  }

  function csvCell(value) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function toCsv(header, rows) {
    return [header, ...rows].map((r) => r.map(csvCell).join(",")).join("\n") + "\n";
  }

  // ---------------------------------------------------------------------------------------------- charts
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#57606a"];

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function lineChart(box, title, series, unit) {
    // series: {label: [[t, y], ...]}; draws one polyline per label with a legend and the latest values
    const w = 420, h = 150, pad = 30;
    const all = Object.values(series).flat();
    const chart = svg("svg", { viewBox: "0 0 " + w + " " + h, class: "plot", role: "img", "aria-label": title });
    const label = svg("text", { x: 4, y: 12, class: "title" });
    label.textContent = title;
    chart.appendChild(label);
    if (all.length) {
      const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
      const ymax = Math.max(...all.map((p) => p[1]), 1e-9) * 1.1;
      const x = (t) => pad + (w - 2 * pad) * (t - t0) / (t1 - t0);
      const y = (v) => h - pad + 10 - (h - pad - 10) * v / ymax;
      const axis = svg("text", { x: 4, y: 26, class: "axis" });
      axis.textContent = "max " + ymax.toPrecision(3) + " " + unit;
      chart.appendChild(axis);
      Object.entries(series).forEach(([name, points], i) => {
        const color = COLORS[i % COLORS.length];
        chart.appendChild(svg("polyline", { fill: "none", stroke: color, "stroke-width": 2,
          points: points.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ") }));
        const last = points.length ? points[points.length - 1][1] : 0;
        const legend = svg("text", { x: w - 150, y: 14 + 13 * i, fill: color, class: "legend" });
        legend.textContent = name + ": " + last.toPrecision(3) + " " + unit;
        chart.appendChild(legend);
      });
    }
    box.appendChild(chart);
  }

  function barChart(box, title, bars) {
    // bars: [[label, value]]
    const w = 420, h = 150, pad = 24;
    const chart = svg("svg", { viewBox: "0 0 " + w + " " + h, class: "plot", role: "img", "aria-label": title });
    const label = svg("text", { x: 4, y: 12, class: "title" });
    label.textContent = title;
    chart.appendChild(label);
    const max = Math.max(1, ...bars.map((b) => b[1]));
    const bw = (w - 2 * pad) / Math.max(bars.length, 1);
    bars.forEach(([name, value], i) => {
      const bh = (h - 2 * pad) * value / max;
      chart.appendChild(svg("rect", { x: pad + i * bw + 1, y: h - pad - bh, width: Math.max(bw - 2, 1), height: bh,
        fill: COLORS[0] }));
      if (i % Math.ceil(bars.length / 8) === 0) { // at most 8 labels, so they never overlap
        const t = svg("text", { x: pad + i * bw + 2, y: h - 8, class: "axis" });
        t.textContent = String(name);
        chart.appendChild(t);
      }
    });
    box.appendChild(chart);
  }

  function percentile(sorted, p) {
    if (!sorted.length) return 0;
    return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  }

  // ---------------------------------------------------------------------------------------------- load test
  const MAX_REQUESTS = 5000;
  const MAX_CONCURRENCY = 32;

  function loadTest(url, init, total, concurrency, onProgress) {
    // total requests at most `concurrency` at a time; answers {promise, stop}
    if (!(total >= 1 && total <= MAX_REQUESTS)) throw new Error("requests must be from 1 to " + MAX_REQUESTS);
    if (!(concurrency >= 1 && concurrency <= MAX_CONCURRENCY)) throw new Error("concurrency must be from 1 to " + MAX_CONCURRENCY);
    const stats = { sent: 0, done: 0, errors: 0, latencies: [], versions: {}, statuses: {}, started: performance.now(), stopped: false };
    const one = async () => {
      while (!stats.stopped && stats.sent < total) {
        stats.sent += 1;
        const t = performance.now();
        try {
          const r = await fetch(url, init);
          await r.arrayBuffer();
          const v = r.headers.get("x-mlport-version") || "-";
          stats.versions[v] = (stats.versions[v] || 0) + 1;
          stats.statuses[r.status] = (stats.statuses[r.status] || 0) + 1;
          if (!r.ok) stats.errors += 1;
        } catch (e) {
          stats.errors += 1;
        }
        stats.latencies.push(performance.now() - t);
        stats.done += 1;
        onProgress(stats);
      }
    };
    const workers = [];
    for (let i = 0; i < concurrency; i++) workers.push(one());
    const promise = Promise.all(workers).then(() => { stats.finished = performance.now(); return stats; });
    return { promise, stop: () => { stats.stopped = true; } };
  }

  return { zip, parseCsv, toCsv, lineChart, barChart, percentile, loadTest, MAX_REQUESTS, MAX_CONCURRENCY };
})();
