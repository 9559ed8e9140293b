// The deployment page's recent requests: the deployment's request log (GET /api/v1/deployments/NAME/logs), newest
// first, a page at a time, filtered by the version that answered and the status; new records are read with the
// answer's cursor while the first page is shown; one record's details with its tensors (see tensors.js).
"use strict";

window.MlportRequests = (() => {
  const C = window.MlportConsole;
  const PAGE = 20;
  const MAX_KEPT = 2000;
  const REFRESH_MS = 3000;

  let base = "";
  const s = { records: [], cursor: null, page: 0, exhausted: false, loaded: false, on: null };

  function state(status) {
    const ok = status === "ok";
    return C.el("span", { class: "state state-" + (ok ? "ok" : "drift"), text: String(status) });
  }

  function time(text) {
    const d = new Date(String(text));
    return Number.isNaN(d.getTime()) ? String(text) : d.toLocaleString();
  }

  function names(list) {
    return Array.isArray(list) ? list.map(String).join(", ") : "";
  }

  async function read(params) {
    const query = new URLSearchParams(params).toString();
    const answer = await C.api("GET", base + "/logs?" + query);
    return { records: (answer.records || []).reverse(), cursor: answer.cursor };
  }

  async function loadLatest(limit) {
    // the newest `limit` records (the cursor then goes on from them)
    const got = await read({ limit: String(limit) });
    s.records = got.records;
    s.cursor = got.cursor;
    s.exhausted = got.records.length < limit;
    s.loaded = true;
  }

  async function poll() {
    if (!s.loaded) return loadLatest(PAGE * 2);
    if (s.page !== 0) return undefined; // a page further back stays as it is
    const got = await read({ cursor: s.cursor, limit: "1000" });
    s.cursor = got.cursor;
    if (!got.records.length) return undefined;
    s.records = [...got.records, ...s.records];
    if (s.records.length > MAX_KEPT) { s.records.length = MAX_KEPT; s.exhausted = false; }
    return undefined;
  }

  function filtered() {
    const form = document.getElementById("requests-filter");
    const version = form.elements.version.value;
    const status = form.elements.status.value;
    return s.records.filter((r) => (!version || String(r.version) === version) && (!status || String(r.status) === status));
  }

  function options(select, values) {
    const chosen = select.value;
    const all = Array.from(new Set([...values, chosen].filter(Boolean))).sort();
    select.textContent = "";
    select.appendChild(C.el("option", { value: "", text: "any" }));
    for (const v of all) select.appendChild(C.el("option", { value: v, text: v }));
    select.value = chosen;
  }

  function draw() {
    const form = document.getElementById("requests-filter");
    options(form.elements.version, s.records.map((r) => String(r.version)));
    options(form.elements.status, s.records.map((r) => String(r.status)));
    const shown = filtered();
    const first = s.page * PAGE;
    const page = shown.slice(first, first + PAGE);
    const tbody = C.rows(document.getElementById("requests-table"), page, (r) => [time(r.time),
      C.el("a", { href: "#request", class: "request-id", text: String(r.id), onclick: (e) => { e.preventDefault(); detail(r); } }),
      "v" + r.version, state(r.status), Number(r.latency_ms).toFixed(2) + " ms", r.protocol, names(r.routed_to),
      names(r.answered_by)]);
    Array.from(tbody.rows).forEach((tr, i) => { tr.dataset.id = String(page[i].id); });
    document.getElementById("requests-page").textContent = shown.length ? "requests " + (first + 1) + "-" +
      (first + page.length) + " of the " + shown.length + " newest read" + (s.exhausted ? "" : " (older ones kept)") :
      "no logged request" + (s.records.length ? " matches the filter" : " yet");
    document.getElementById("requests-newer").disabled = s.page === 0;
    document.getElementById("requests-older").disabled = s.exhausted && first + PAGE >= shown.length;
  }

  function detail(r) {
    const box = document.getElementById("request-detail");
    box.textContent = "";
    box.hidden = false;
    const facts = [["Request id", r.id], ["Time", r.time], ["Model", r.model], ["Version that answered", "v" + r.version],
      ["Protocol", r.protocol], ["Status", r.status], ["Latency", r.latency_ms + " ms"], ["Routed to", names(r.routed_to)],
      ["Answered by", names(r.answered_by)]];
    const dl = C.el("dl", { class: "facts" });
    for (const [k, v] of facts) dl.append(C.el("dt", { text: k }), C.el("dd", { text: v === null || v === undefined ? "" : String(v) }));
    box.append(C.el("h3", { text: "Request " + String(r.id) }), dl);
    window.MlportTensors.render(box, "Inputs", r.inputs);
    window.MlportTensors.render(box, "Outputs", r.outputs);
    box.appendChild(C.el("button", { type: "button", text: "Close", onclick: () => { box.hidden = true; } }));
  }

  async function older() {
    const wanted = (s.page + 2) * PAGE;
    if (filtered().length < wanted && !s.exhausted && s.records.length < MAX_KEPT) {
      await loadLatest(Math.min(MAX_KEPT, s.records.length + 5 * PAGE));
    }
    if ((s.page + 1) * PAGE < filtered().length) s.page += 1;
    draw();
  }

  async function refresh() {
    const status = document.getElementById("requests-status");
    try {
      const logging = (await C.api("GET", base + "/logging")).logging;
      s.on = logging !== null && logging.sample > 0;
      document.getElementById("requests-off").hidden = s.on;
      document.getElementById("requests-filter").hidden = !s.on;
      document.getElementById("requests-table").hidden = !s.on;
      status.textContent = s.on ? "logging " + logging.sample * 100 + "% of the requests, payload " + logging.payload : "";
      status.className = "";
      if (!s.on) return;
      await poll();
      draw();
    } catch (e) {
      status.textContent = "logged requests not read: " + e.message;
      status.className = "error";
    }
  }

  function setupControls(name) {
    const form = document.getElementById("requests-filter");
    form.addEventListener("change", () => { s.page = 0; draw(); });
    form.addEventListener("submit", (e) => e.preventDefault());
    document.getElementById("requests-newer").addEventListener("click", () => { s.page = Math.max(0, s.page - 1); draw(); });
    document.getElementById("requests-older").addEventListener("click", () => older().catch(C.failed));
    const on = document.getElementById("logging-on");
    if (on) on.addEventListener("click", () => {
      if (!window.confirm("Log every request of " + name + " with its tensors? Its replicas start again.")) return;
      C.api("PUT", base + "/logging", { sample: 1.0, payload: "all" })
        .then(() => { C.notice("request logging on: the replicas start again"); return refresh(); }).catch(C.failed);
    });
  }

  return { setup: (name) => {
    base = "/api/v1/deployments/" + encodeURIComponent(name);
    setupControls(name);
    const loop = () => refresh().then(() => window.setTimeout(loop, REFRESH_MS));
    loop();
  } };
})();
