// The deployment page's drift panel: GET /api/v1/deployments/NAME/drift every few seconds; for each replica of
// each version, a row per input feature and output with its figures (PSI, Kolmogorov-Smirnov, chi-square),
// its status, the window and the reference.
"use strict";

window.MlportDrift = (() => {
  const C = window.MlportConsole;
  const REFRESH_MS = 5000;
  const STATES = ["ok", "warning", "drift", "insufficient", "unwatched"];
  const METHODS = [["psi", "PSI"], ["ks", "KS"], ["chi2", "Chi-square"]];

  let url = "";

  function state(status) {
    const s = String(status);
    return C.el("span", { class: "state state-" + (STATES.includes(s) ? s : "other"), "data-state": s, text: s });
  }

  function num(x) {
    if (typeof x !== "number") return "";
    return x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e5) ? x.toExponential(2) : String(Number(x.toPrecision(4)));
  }

  function percent(x) {
    return typeof x === "number" ? num(100 * x) + "%" : "";
  }

  function figure(methods, key) {
    const m = methods && methods[key];
    if (!m) return "";
    const text = num(m.value) + (m.pvalue !== undefined ? " (p=" + num(m.pvalue) + ")" : "");
    return C.el("span", { class: "figure state-" + (STATES.includes(m.status) ? m.status : "other"),
      title: key + ": " + m.status, text });
  }

  function windowText(v) {
    const w = v.window || {};
    return v.rows + " of " + w.rows + " rows" + (w.seconds ? ", last " + w.seconds + " s" : "");
  }

  function seenText(v) {
    const w = v.window || {};
    return v.rows_seen + " rows seen; figures once the window holds " + w.min_rows + " rows";
  }

  function versionTable(v) {
    const head = ["Feature", "Role", "Status", ...METHODS.map((m) => m[1]), "Missing (window / reference)", "Window",
      "Reference"];
    const table = C.el("table", { class: "list drift" }, C.el("thead", {}, C.el("tr", {}, ...head.map((h) => C.el("th", { text: h })))),
      C.el("tbody"));
    const win = windowText(v);
    const tbody = C.rows(table, v.features || [], (f) => [f.name, f.role + " (" + f.kind + ")", state(f.status),
      ...METHODS.map((m) => figure(f.methods, m[0])), percent(f.missing_rate) + " / " + percent(f.reference_missing_rate),
      win, v.reference_rows + " rows"]);
    Array.from(tbody.rows).forEach((tr, i) => {
      tr.className = "drift-row state-row-" + String(v.features[i].status);
      tr.dataset.feature = String(v.features[i].name);
    });
    return table;
  }

  function replicaBlock(r) {
    const box = C.el("div", { class: "drift-replica" });
    const who = "v" + r.version + " replica " + r.replica + (r.role ? " (" + r.role + ")" : "");
    const versions = r.versions || [];
    if (!versions.length) {
      box.append(C.el("h3", {}, who + ": ", state(r.status)),
        C.el("p", { class: r.error ? "error" : "", text: r.error || r.reason || "" }));
      return box;
    }
    for (const v of versions) {
      box.append(C.el("h3", {}, who + ": ", state(v.status), " over " + v.rows + " rows, computed " + C.when(v.computed_at)),
        C.el("p", { class: "drift-seen", text: seenText(v) }));
      if (v.error) box.append(C.el("p", { class: "error", text: v.error }));
      if (v.status === "insufficient") {
        box.append(C.el("p", { text: "collecting rows: " + windowText(v) + " in the window" }));
      } else {
        box.append(versionTable(v));
      }
    }
    return box;
  }

  function show(data) {
    const replicas = data.replicas || [];
    const summary = document.getElementById("drift-summary");
    summary.textContent = "";
    summary.append("Deployment drift: ", state(data.status));
    const none = document.getElementById("drift-none");
    const watched = replicas.some((r) => (r.versions || []).length);
    none.hidden = watched;
    const reason = replicas.map((r) => r.reason || r.error).find(Boolean);
    document.getElementById("drift-reason").textContent = replicas.length ? (reason || "no version is watched") :
      "no replica is ready to ask yet";
    const box = document.getElementById("drift-versions");
    box.textContent = "";
    if (watched) for (const r of replicas) box.appendChild(replicaBlock(r));
  }

  async function refresh() {
    try {
      show(await C.api("GET", url));
    } catch (e) {
      const summary = document.getElementById("drift-summary");
      summary.textContent = "drift not read: " + e.message;
      summary.className = "error";
      return;
    }
    document.getElementById("drift-summary").className = "";
  }

  return { setup: (name) => {
    url = "/api/v1/deployments/" + encodeURIComponent(name) + "/drift";
    const loop = () => refresh().then(() => window.setTimeout(loop, REFRESH_MS));
    loop();
  }, refresh };
})();
