// The deployment page's test tools: score a CSV test set through the gateway (bounded batches), with accuracy and
// a confusion matrix (classes) or MAE/RMSE (numbers) against a label column; and a bounded, stoppable load test.
"use strict";

window.MlportTesting = (() => {
  const C = window.MlportConsole;
  const T = MlportTools;
  const D = window.MlportDeployment;
  const SHOWN_ROWS = 200;
  const LABEL_NAMES = ["label", "class", "target", "y", "species"];

  let ctx = null;
  let data = null;
  let signature = null;

  function cell(text) {
    const t = text.trim();
    return t !== "" && !Number.isNaN(Number(t)) ? Number(t) : t;
  }

  async function describe() {
    if (signature) return signature;
    const r = await ctx.gatewayFetch("describe", { method: "GET" });
    if (!r.ok) throw new Error("describe through the gateway answered HTTP " + r.status);
    signature = await r.json();
    return signature;
  }

  async function chooseFile(form) {
    const file = form.elements.file.files[0];
    if (!file) return;
    if (file.size > D.MAX_CSV_BYTES) throw new Error("the file is larger than " + C.size(D.MAX_CSV_BYTES));
    data = T.parseCsv(await file.text(), D.MAX_CSV_ROWS);
    const label = form.elements.label;
    label.textContent = "";
    label.appendChild(C.el("option", { value: "", text: "none" }));
    for (const h of data.header) label.appendChild(C.el("option", { value: h, text: h }));
    label.value = data.header.find((h) => LABEL_NAMES.includes(h.toLowerCase())) || "";
    const sig = await describe();
    const output = form.elements.output;
    output.textContent = "";
    for (const o of sig.outputs || []) output.appendChild(C.el("option", { value: o.name, text: o.name }));
    const named = (sig.outputs || []).find((o) => o.name.toLowerCase().includes("label"));
    if (named) output.value = named.name;
    document.getElementById("dataset-status").textContent = data.rows.length + " rows, columns " + data.header.join(", ");
  }

  function batchBody(sig, rows, labelIndex) {
    const inputs = sig.inputs || [];
    const index = Object.fromEntries(data.header.map((h, i) => [h, i]));
    if (inputs.every((i) => i.name in index)) {
      return Object.fromEntries(inputs.map((i) => [i.name, rows.map((r) => cell(r[index[i.name]]))]));
    }
    if (inputs.length !== 1) {
      throw new Error("name the columns like the model's inputs: " + inputs.map((i) => i.name).join(", "));
    }
    const features = rows.map((r) => r.filter((_, i) => i !== labelIndex).map(cell));
    return { [inputs[0].name]: features };
  }

  function prediction(value) {
    if (Array.isArray(value)) {
      if (value.length === 1) return prediction(value[0]);
      return value.indexOf(Math.max(...value)); // scores: the best class
    }
    return value;
  }

  async function score(form) {
    if (!data) throw new Error("choose a CSV file first");
    const sig = await describe();
    const labelName = form.elements.label.value;
    const labelIndex = labelName ? data.header.indexOf(labelName) : -1;
    const output = form.elements.output.value;
    const bar = document.getElementById("dataset-progress");
    const status = document.getElementById("dataset-status");
    bar.hidden = false;
    const predictions = [];
    for (let start = 0; start < data.rows.length; start += D.BATCH_ROWS) {
      const rows = data.rows.slice(start, start + D.BATCH_ROWS);
      const r = await ctx.gatewayFetch("eval", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify(batchBody(sig, rows, labelIndex)) });
      const answer = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error("rows " + (start + 1) + "-" + (start + rows.length) + ": " + (answer.error || r.status));
      const values = answer[output];
      if (!Array.isArray(values) || values.length !== rows.length) throw new Error("output " + output + " is not one value per row");
      predictions.push(...values.map(prediction));
      bar.value = Math.round(100 * (start + rows.length) / data.rows.length);
      status.textContent = "scored " + (start + rows.length) + " of " + data.rows.length + " rows";
    }
    show(predictions, labelIndex);
  }

  function show(predictions, labelIndex) {
    document.getElementById("dataset-result").hidden = false;
    const header = [...data.header, "prediction"];
    const all = data.rows.map((r, i) => [...r, predictions[i]]);
    const blob = new Blob([T.toCsv(header, all)], { type: "text/csv" });
    document.getElementById("dataset-download").href = URL.createObjectURL(blob);
    const table = document.getElementById("dataset-table");
    table.tHead.textContent = "";
    table.tHead.appendChild(C.el("tr", {}, ...header.map((h) => C.el("th", { text: h }))));
    C.rows(table, all.slice(0, SHOWN_ROWS), (r) => r);
    const charts = document.getElementById("dataset-charts");
    charts.textContent = "";
    const numeric = predictions.every((p) => typeof p === "number");
    const classes = !numeric || predictions.every((p) => Number.isInteger(p));
    const accuracy = document.getElementById("dataset-accuracy");
    const confusion = document.getElementById("dataset-confusion");
    confusion.textContent = "";
    accuracy.textContent = "";
    if (classes) {
      const counts = {};
      for (const p of predictions) counts[p] = (counts[p] || 0) + 1;
      T.barChart(charts, "predicted classes", Object.entries(counts).sort());
    } else {
      T.barChart(charts, "predicted values", histogram(predictions, 20));
    }
    if (labelIndex < 0) return;
    const labels = data.rows.map((r) => cell(r[labelIndex]));
    if (classes) {
      const right = labels.filter((l, i) => String(l) === String(predictions[i])).length;
      accuracy.textContent = "accuracy " + (100 * right / labels.length).toFixed(2) + "% (" + right + " of " +
        labels.length + ")";
      confusionMatrix(confusion, labels, predictions);
    } else {
      const residuals = labels.map((l, i) => Number(l) - predictions[i]);
      const mae = residuals.reduce((s, r) => s + Math.abs(r), 0) / residuals.length;
      const rmse = Math.sqrt(residuals.reduce((s, r) => s + r * r, 0) / residuals.length);
      accuracy.textContent = "MAE " + mae.toPrecision(4) + ", RMSE " + rmse.toPrecision(4);
      T.barChart(charts, "residuals (label - prediction)", histogram(residuals, 20));
    }
  }

  function histogram(values, bins) {
    const lo = Math.min(...values), hi = Math.max(...values);
    const width = (hi - lo) / bins || 1;
    const counts = new Array(bins).fill(0);
    for (const v of values) counts[Math.min(bins - 1, Math.floor((v - lo) / width))] += 1;
    return counts.map((n, i) => [(lo + i * width).toPrecision(2), n]);
  }

  function confusionMatrix(table, labels, predictions) {
    const classes = Array.from(new Set([...labels, ...predictions].map(String))).sort();
    const head = C.el("tr", {}, C.el("th", { text: "label \\ predicted" }), ...classes.map((c) => C.el("th", { text: c })));
    table.appendChild(C.el("thead", {}, head));
    const body = C.el("tbody");
    for (const want of classes) {
      const cells = classes.map((got) => labels.filter((l, i) => String(l) === want && String(predictions[i]) === got).length);
      body.appendChild(C.el("tr", {}, C.el("th", { text: want }), ...cells.map((n) => C.el("td", { text: String(n) }))));
    }
    table.appendChild(body);
  }

  // -------------------------------------------------------------------------------------------- load test
  function setupLoadTest() {
    const form = document.getElementById("loadtest");
    const stop = document.getElementById("loadtest-stop");
    const status = document.getElementById("loadtest-status");
    const charts = document.getElementById("loadtest-charts");
    let running = null;
    const report = (s) => {
      const seconds = ((s.finished || performance.now()) - s.started) / 1000;
      const sorted = [...s.latencies].sort((a, b) => a - b);
      status.textContent = s.done + " of " + form.elements.total.value + " done, " + (s.done / seconds).toFixed(1) +
        " requests/s, p50 " + T.percentile(sorted, 0.5).toFixed(1) + " ms, p99 " + T.percentile(sorted, 0.99).toFixed(1) +
        " ms, " + s.errors + " errors; by version: " +
        Object.entries(s.versions).map(([v, n]) => "v" + v + " " + n).join(", ");
    };
    const drawn = (s) => {
      charts.textContent = "";
      T.barChart(charts, "latency histogram (ms)", histogram(s.latencies.length ? s.latencies : [0], 20));
      T.barChart(charts, "answers by version", Object.entries(s.versions).map(([v, n]) => ["v" + v, n]));
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (running) return;
      const body = form.elements.body.value.trim();
      if (body) {
        try { JSON.parse(body); } catch (e) { C.notice("the body is not valid JSON: " + e.message, "error"); return; }
      }
      const path = form.elements.path.value.replace(/^\/+/, "");
      const csrf = document.querySelector('meta[name="csrf-token"]').content;
      const init = body ? { method: "POST", body, credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf } } : { method: "GET", credentials: "same-origin" };
      try {
        running = T.loadTest("/deployments/" + encodeURIComponent(ctx.name) + "/" + path, init,
          Number(form.elements.total.value), Number(form.elements.concurrency.value), report);
      } catch (e) {
        C.failed(e);
        return;
      }
      stop.disabled = false;
      running.promise.then((s) => { report(s); drawn(s); status.dataset.done = "yes"; })
        .finally(() => { running = null; stop.disabled = true; });
      status.dataset.done = "";
    });
    stop.addEventListener("click", () => { if (running) running.stop(); });
  }

  return { setup: (context) => {
    ctx = context;
    const form = document.getElementById("dataset");
    form.elements.file.addEventListener("change", () => chooseFile(form).catch(C.failed));
    C.onSubmit("dataset", score);
    setupLoadTest();
  } };
})();
