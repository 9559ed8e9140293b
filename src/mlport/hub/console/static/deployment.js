// The deployment page: versions and replicas, traffic controls, live charts from the hub's own counters,
// Try it, a CSV test set and a load test through the gateway.
"use strict";

window.MlportDeployment = (() => {
  const C = window.MlportConsole;
  const T = MlportTools;
  const MAX_POINTS = 60;
  const MAX_CSV_ROWS = 100000;
  const MAX_CSV_BYTES = 64 * 1024 * 1024;
  const BATCH_ROWS = 256;

  let name = "";
  let base = "";
  let gateway = "";
  let current = null;
  let policyShown = false;

  function gatewayFetch(path, init) {
    const headers = Object.assign({ "x-csrf-token": document.querySelector('meta[name="csrf-token"]').content },
      (init && init.headers) || {});
    return fetch(gateway + path, Object.assign({ credentials: "same-origin" }, init, { headers }));
  }

  // -------------------------------------------------------------------------------------------- state
  function roleOf(d, version) {
    const t = d.target;
    if (version === t.primary) return "primary";
    if (version === t.candidate) return t.strategy;
    return "retiring";
  }

  function trafficOf(d, version) {
    const t = d.target;
    if (!t.candidate || t.strategy === "shadow") return version === t.primary ? "100%" : (version === t.candidate ? "copy" : "0%");
    if (version === t.candidate) return t.percent + "%";
    return version === t.primary ? (100 - t.percent) + "%" : "0%";
  }

  async function load() {
    const d = await C.api("GET", base);
    current = d;
    const p = d.policy;
    document.getElementById("deployment-info").textContent = "model " + d.model + " - " + C.strategy(d.target) +
      " - replicas " + p.min_replicas + " to " + p.max_replicas + (p.scale_to_zero ? ", scales to zero" : "") +
      " - health " + C.health(d) + (d.replicas && d.replicas.error ? " - " + d.replicas.error : "");
    const versions = (d.replicas && d.replicas.versions) || [];
    C.rows(document.getElementById("replicas"), versions, (v) => ["v" + v.version, roleOf(d, v.version),
      trafficOf(d, v.version), (v.ready || 0) + " / " + (v.desired || 0), v.state, v.failure || v.last_error || ""]);
    const form = document.getElementById("scale");
    if (form && !policyShown) {
      policyShown = true;
      for (const key of ["min_replicas", "max_replicas", "target_inflight"]) form.elements[key].value = p[key];
      form.elements.scale_to_zero.checked = p.scale_to_zero;
    }
    const history = (await C.api("GET", base + "/history")).history;
    const list = document.getElementById("history");
    list.textContent = "";
    for (const e of history) {
      list.appendChild(C.el("li", {}, C.el("time", { text: C.when(e.at) }), " ",
        C.el("strong", { text: e.action }), " by " + e.by));
    }
    return d;
  }

  // -------------------------------------------------------------------------------------------- controls
  function act(question, method, path, data, done) {
    if (!window.confirm(question)) return;
    C.api(method, path, data).then((answer) => { C.notice(done); return answer; })
      .then(() => (method === "DELETE" ? window.location.assign("/ui/deployments") : load())).catch(C.failed);
  }

  function setupControls() {
    const exp = document.getElementById("experiment");
    if (!exp) return;
    const shown = document.getElementById("percent-shown");
    exp.elements.percent.addEventListener("input", () => { shown.textContent = exp.elements.percent.value + "%"; });
    exp.addEventListener("submit", (event) => {
      event.preventDefault();
      const strategy = exp.elements.strategy.value;
      const version = Number(exp.elements.version.value);
      const percent = Number(exp.elements.percent.value);
      const what = strategy === "shadow" ? "copy all traffic to v" + version :
        "send " + percent + "% of traffic to v" + version;
      act("Start a " + strategy + " of " + name + ": " + what + "?", "POST", base + "/" + strategy,
        { version, percent }, strategy + " of v" + version + " started");
    });
    document.getElementById("promote").addEventListener("click", () =>
      act("Promote the candidate of " + name + " to serve all traffic?", "POST", base + "/promote", undefined, "promoted"));
    document.getElementById("rollback").addEventListener("click", () =>
      act("Roll " + name + " back?", "POST", base + "/rollback", undefined, "rolled back"));
    document.getElementById("undeploy").addEventListener("click", () =>
      act("Undeploy " + name + " and stop its replicas?", "DELETE", base, undefined, "undeployed"));
    C.onSubmit("scale", async (form) => {
      const data = { min_replicas: Number(form.elements.min_replicas.value),
        max_replicas: Number(form.elements.max_replicas.value),
        target_inflight: Number(form.elements.target_inflight.value),
        scale_to_zero: form.elements.scale_to_zero.checked };
      await C.api("POST", base + "/scale", data);
      C.notice("replica policy saved");
      await load();
    });
  }

  // -------------------------------------------------------------------------------------------- live charts
  const history = { rps: {}, errors: {}, latency: {}, replicas: {}, agreement: {}, shadowMs: {} };
  let previous = null;

  function labelsOf(text) {
    return Object.fromEntries(Array.from(text.matchAll(/(\w+)="([^"]*)"/g), (x) => [x[1], x[2]]));
  }

  function parseMetrics(text) {
    // the gateway's counters of this deployment: requests by version and status, latency buckets by version
    const out = { requests: {}, buckets: {} };
    const line = /^(mlport_hub_gateway_requests_total|mlport_hub_gateway_request_seconds_bucket)\{([^}]*)\} ([0-9.e+]+)$/;
    for (const row of text.split("\n")) {
      const m = line.exec(row);
      if (!m) continue;
      const labels = labelsOf(m[2]);
      if (labels.deployment !== name) continue;
      const v = labels.version || "-";
      const n = Number(m[3]);
      if (m[1] === "mlport_hub_gateway_requests_total") {
        const slot = out.requests[v] || (out.requests[v] = { total: 0, errors: 0 });
        slot.total += n;
        if (!labels.status.startsWith("2")) slot.errors += n;
      } else {
        (out.buckets[v] || (out.buckets[v] = {}))[labels.le] = n;
      }
    }
    return out;
  }

  function quantile(deltas, q) {
    // the upper bound (ms) of the first cumulative bucket holding a share q of the requests
    const total = deltas["+Inf"] || 0;
    if (!total) return 0;
    const bounds = Object.entries(deltas).filter(([le]) => le !== "+Inf").map(([le, n]) => [Number(le), n])
      .sort((a, b) => a[0] - b[0]);
    for (const [le, n] of bounds) if (n >= q * total) return le * 1000;
    return (bounds.length ? bounds[bounds.length - 1][0] : 0) * 1000;
  }

  function push(map, key, point) {
    const series = map[key] || (map[key] = []);
    series.push(point);
    if (series.length > MAX_POINTS) series.shift();
  }

  async function sample() {
    const now = Date.now() / 1000;
    const text = await (await fetch("/metrics", { credentials: "same-origin" })).text();
    const m = parseMetrics(text);
    if (previous) {
      const dt = Math.max(now - previous.at, 0.001);
      for (const [v, c] of Object.entries(m.requests)) {
        const before = previous.m.requests[v] || { total: 0, errors: 0 };
        const n = c.total - before.total;
        push(history.rps, "v" + v, [now, n / dt]);
        push(history.errors, "v" + v, [now, n > 0 ? 100 * (c.errors - before.errors) / n : 0]);
      }
      for (const [v, buckets] of Object.entries(m.buckets)) {
        const before = previous.m.buckets[v] || {};
        const deltas = {};
        for (const [le, count] of Object.entries(buckets)) deltas[le] = count - (before[le] || 0);
        if (!deltas["+Inf"]) continue; // no request of this version in the interval
        push(history.latency, "v" + v + " p50", [now, quantile(deltas, 0.5)]);
        push(history.latency, "v" + v + " p99", [now, quantile(deltas, 0.99)]);
      }
    }
    previous = { at: now, m };
    for (const v of (current && current.replicas && current.replicas.versions) || []) {
      push(history.replicas, "v" + v.version, [now, v.ready || 0]);
    }
    if (current && current.target.strategy === "shadow") {
      // the hub's comparison of the live answers with the shadow's
      const s = await C.api("GET", base + "/shadow");
      push(history.agreement, "agreement", [now, s.agreement_rate === null ? 0 : 100 * s.agreement_rate]);
      push(history.shadowMs, "live v" + s.primary + " p50", [now, s.live_latency_ms.p50 || 0]);
      push(history.shadowMs, "shadow v" + s.shadow + " p50", [now, s.shadow_latency_ms.p50 || 0]);
    }
    draw();
  }

  function draw() {
    const box = document.getElementById("chart");
    box.textContent = "";
    T.lineChart(box, "requests per second by version", history.rps, "rps");
    T.lineChart(box, "error rate by version", history.errors, "%");
    T.lineChart(box, "latency by version (p50, p99)", history.latency, "ms");
    T.lineChart(box, "ready replicas by version", history.replicas, "");
    if (Object.keys(history.agreement).length) {
      T.lineChart(box, "shadow: agreement with the live version", history.agreement, "%");
      T.lineChart(box, "shadow: latency of both versions", history.shadowMs, "ms");
    }
  }

  // -------------------------------------------------------------------------------------------- try it
  async function tryFields(form) {
    // a field per input of the signature (read through the gateway); "fill" writes them as the eval JSON body
    const r = await gatewayFetch("describe", { method: "GET" });
    if (!r.ok) return;
    const sig = await r.json();
    const box = document.getElementById("try-fields");
    for (const input of sig.inputs || []) {
      const hint = (input.type || input.datatype) + " [" + (input.shape || []).join(", ") + "]";
      box.appendChild(C.el("label", {}, input.name + " (" + hint + ") ",
        C.el("input", { name: "field:" + input.name, "data-input": input.name, "aria-label": input.name })));
    }
    document.getElementById("try-fill").addEventListener("click", () => {
      const body = {};
      for (const field of box.querySelectorAll("input[data-input]")) {
        if (field.value.trim() === "") continue;
        try { body[field.dataset.input] = JSON.parse(field.value); } catch (e) { body[field.dataset.input] = field.value; }
      }
      form.elements.body.value = JSON.stringify(body);
      form.elements.path.value = "eval";
    });
  }

  function setupTry() {
    const form = document.getElementById("try");
    tryFields(form).catch(() => null);
    const out = document.getElementById("try-answer");
    const preview = document.getElementById("try-preview");
    form.elements.image.addEventListener("change", () => {
      const file = form.elements.image.files[0];
      preview.hidden = !file;
      if (file) preview.src = URL.createObjectURL(file);
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = form.elements.image.files[0];
      const text = form.elements.body.value.trim();
      let init = { method: "GET" };
      let path = form.elements.path.value.replace(/^\/+/, "");
      if (file) {
        path = "eval";
        init = { method: "POST", body: file, headers: { "content-type": file.type || "image/png" } };
      } else if (text) {
        try { JSON.parse(text); } catch (e) { C.notice("the body is not valid JSON: " + e.message, "error"); return; }
        init = { method: "POST", body: text, headers: { "content-type": "application/json" } };
      }
      const started = performance.now();
      try {
        const r = await gatewayFetch(path, init);
        window.MlportExplain.tried(path, init, r.status);
        const answer = await r.text();
        const ms = (performance.now() - started).toFixed(1);
        out.textContent = "HTTP " + r.status + " - version " + (r.headers.get("x-mlport-version") || "-") + " - " +
          ms + " ms\n" + answer.slice(0, 100000);
      } catch (e) {
        window.MlportExplain.tried(path, init, 0);
        out.textContent = "the request failed: " + e.message;
      }
    });
  }

  return { page: async () => {
    name = document.body.dataset.deployment;
    base = "/api/v1/deployments/" + encodeURIComponent(name);
    gateway = "/deployments/" + encodeURIComponent(name) + "/";
    setupControls();
    setupTry();
    window.MlportTesting.setup({ name, gatewayFetch, current: () => current });
    window.MlportExplain.setup({ name, gatewayFetch });
    window.MlportDrift.setup(name);
    window.MlportRequests.setup(name);
    await load();
    await sample();
    window.setInterval(() => { load().catch(C.failed); sample().catch(C.failed); }, 2000);
  }, gatewayFetch, MAX_CSV_ROWS, MAX_CSV_BYTES, BATCH_ROWS };
})();
