// The hub console: every page reads and changes the hub through the management API (/api/v1/...) and the
// gateway (/deployments/NAME/...), as the CLI does. The session cookie authenticates; state-changing calls
// carry the page's CSRF token. Text from the hub is only ever set with textContent (never parsed as HTML).
"use strict";

const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
const DATA = document.body.dataset;

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const kid of kids) {
    if (kid === null || kid === undefined) continue;
    node.appendChild(typeof kid === "string" ? document.createTextNode(kid) : kid);
  }
  return node;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, data) {
  const headers = { accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["x-csrf-token"] = CSRF;
  let body;
  if (data !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(data);
  }
  const r = await fetch(path, { method, headers, body, credentials: "same-origin" });
  if (r.status === 401) {
    window.location.assign("/ui/login");
    throw new ApiError(401, "signed out");
  }
  const text = await r.text();
  let answer = null;
  try { answer = text ? JSON.parse(text) : null; } catch (e) { answer = { error: text }; }
  if (!r.ok) throw new ApiError(r.status, (answer && answer.error) || r.statusText);
  return answer;
}

function notice(message, kind) {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = message;
  box.className = "notice " + (kind || "ok");
  box.hidden = !message;
}

function failed(err) {
  notice(err.message || String(err), "error");
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = Number(bytes) || 0;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function rows(table, items, cells) {
  const tbody = table.tBodies[0];
  tbody.textContent = "";
  for (const item of items) {
    const tr = tbody.insertRow();
    for (const cell of cells(item)) {
      const td = tr.insertCell();
      if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === null || cell === undefined ? "" : String(cell);
    }
  }
  return tbody;
}

function formData(form) {
  const out = {};
  for (const [key, value] of new FormData(form).entries()) {
    if (typeof value === "string" && value.trim() !== "") out[key] = value.trim();
  }
  return out;
}

function listOf(text) {
  return (text || "").split(",").map((s) => s.trim()).filter(Boolean);
}

function onSubmit(id, handler) {
  const form = document.getElementById(id);
  if (!form) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    Promise.resolve(handler(form)).catch(failed);
  });
}

// ------------------------------------------------------------------------------------------------ models
async function modelsPage() {
  const table = document.getElementById("models");
  const search = document.getElementById("search");
  let all = [];
  const show = () => {
    const q = search.value.trim().toLowerCase();
    const shown = all.filter((m) => !q || m.name.includes(q) || (m.description || "").toLowerCase().includes(q));
    rows(table, shown, (m) => [el("a", { href: "/ui/models/" + encodeURIComponent(m.name), text: m.name }),
      m.description, m.latest_version === null ? "none" : "v" + m.latest_version, m.created_by, when(m.created_at)]);
  };
  const load = async () => { all = (await api("GET", "/api/v1/models")).models; show(); };
  search.addEventListener("input", show);
  onSubmit("create-model", async (form) => {
    const data = formData(form);
    await api("POST", "/api/v1/models", data);
    form.reset();
    notice("created model " + data.name);
    await load();
  });
  await load();
}

// ------------------------------------------------------------------------------------------------ one model
function signatureTable(signature) {
  const table = el("table", { class: "list signature" },
    el("thead", {}, el("tr", {}, el("th", { text: "Direction" }), el("th", { text: "Name" }),
      el("th", { text: "Type" }), el("th", { text: "Shape" }))), el("tbody"));
  const items = [];
  for (const dir of ["inputs", "outputs"]) {
    for (const t of (signature && signature[dir]) || []) items.push([dir.slice(0, -1), t.name, t.type || t.datatype,
      "[" + (t.shape || []).join(", ") + "]"]);
  }
  rows(table, items, (r) => r);
  return table;
}

function versionDetail(v) {
  const box = document.getElementById("version-detail");
  box.textContent = "";
  box.hidden = false;
  const facts = [["Format", v.format || "unknown"], ["Size", size(v.size)], ["sha256", v.sha256],
    ["Created by", v.created_by], ["Created", when(v.created_at)], ["Tags", (v.tags || []).join(", ")],
    ["Source", v.source], ["Kind", v.kind], ["Description", v.description]];
  const dl = el("dl", { class: "facts" });
  for (const [k, val] of facts) dl.append(el("dt", { text: k }), el("dd", { text: val || "" }));
  box.append(el("h2", { text: v.model + " v" + v.version }), dl);
  if (v.warning) box.append(el("p", { class: "error", role: "alert", text: v.warning }));
  box.append(el("h3", { text: "Signature" }));
  box.append(v.signature ? signatureTable(v.signature) : el("p", { text: "No signature was recorded." }));
}

async function modelPage() {
  const name = DATA.model;
  const base = "/api/v1/models/" + encodeURIComponent(name);
  const table = document.getElementById("versions");
  const load = async () => {
    const info = await api("GET", base);
    const deployed = (info.deployed_by || []).join(", ");
    document.getElementById("model-info").textContent = (info.description || "") +
      (deployed ? " - deployed by " + deployed : " - not deployed");
    const versions = (await api("GET", base + "/versions")).versions;
    rows(table, versions, (v) => [el("a", { href: "#v" + v.version, text: "v" + v.version,
      onclick: () => versionDetail(v) }), v.format || "unknown", size(v.size), v.created_by, when(v.created_at),
    v.source, (v.tags || []).join(", ")]);
    const wanted = versions.find((v) => "#v" + v.version === window.location.hash);
    if (wanted) versionDetail(wanted);
  };
  if (document.getElementById("upload")) setupUpload(base, load);
  await load();
}

function uploadBlob(base, blob, filename, source) {
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  bar.hidden = false;
  bar.value = 0;
  status.textContent = "uploading " + filename + " (" + size(blob.size) + ")";
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const query = "?filename=" + encodeURIComponent(filename) + "&source=" + encodeURIComponent(source);
    xhr.open("POST", base + "/versions" + query);
    xhr.setRequestHeader("content-type", "application/octet-stream");
    xhr.setRequestHeader("x-csrf-token", CSRF);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total); };
    xhr.onerror = () => reject(new Error("the upload failed: the hub could not be reached"));
    xhr.onload = () => {
      let answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch (e) { answer = { error: xhr.responseText }; }
      if (xhr.status >= 300) { reject(new Error(answer.error || xhr.statusText)); return; }
      bar.value = 100;
      status.textContent = "uploaded v" + answer.version + " (" + (answer.format || "unknown format") + ")";
      if (answer.warning) notice(answer.warning, "error");
      resolve(answer);
    };
    xhr.send(blob);
  });
}

async function entriesOf(entry, prefix) {
  // the files under a dropped folder, as [relative path, File]
  if (entry.isFile) return [[prefix + entry.name, await new Promise((ok, ko) => entry.file(ok, ko))]];
  const reader = entry.createReader();
  const out = [];
  for (;;) {
    const batch = await new Promise((ok, ko) => reader.readEntries(ok, ko));
    if (!batch.length) break;
    for (const child of batch) out.push(...await entriesOf(child, prefix + entry.name + "/"));
  }
  return out;
}

function setupUpload(base, reload) {
  const zone = document.getElementById("upload");
  const send = async (blob, filename, source) => {
    const v = await uploadBlob(base, blob, filename, source);
    await reload();
    versionDetail(v);
  };
  const sendFolder = async (name, files) => {
    const zip = await MlportTools.zip(files);
    await send(zip, name + ".zip", name);
  };
  document.getElementById("upload-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) send(file, file.name, file.name).catch(failed);
  });
  document.getElementById("upload-folder").addEventListener("change", (e) => {
    const files = Array.from(e.target.files);
    if (!files.length) return;
    const top = files[0].webkitRelativePath.split("/")[0];
    sendFolder(top, files.map((f) => [f.webkitRelativePath.split("/").slice(1).join("/"), f])).catch(failed);
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const item = e.dataTransfer.items && e.dataTransfer.items[0];
    const entry = item && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    if (entry && entry.isDirectory) {
      entriesOf(entry, "").then((files) => sendFolder(entry.name,
        files.map(([path, f]) => [path.split("/").slice(1).join("/"), f]))).catch(failed);
    } else if (e.dataTransfer.files[0]) {
      const file = e.dataTransfer.files[0];
      send(file, file.name, file.name).catch(failed);
    }
  });
}

// ------------------------------------------------------------------------------------------------ deployments
function health(d) {
  const versions = (d.replicas && d.replicas.versions) || [];
  const ready = versions.reduce((n, v) => n + (v.ready || 0), 0);
  const wanted = versions.reduce((n, v) => n + (v.desired || 0), 0);
  return ready + " / " + wanted;
}

function strategy(t) {
  if (!t.candidate) return "single";
  return t.strategy + " v" + t.candidate + (t.strategy === "shadow" ? "" : " " + t.percent + "%");
}

async function deploymentsPage() {
  const table = document.getElementById("deployments");
  const load = async () => {
    const list = (await api("GET", "/api/v1/deployments")).deployments;
    rows(table, list, (d) => [el("a", { href: "/ui/deployments/" + encodeURIComponent(d.name), text: d.name }),
      d.model, "v" + d.target.primary + (d.target.candidate ? ", v" + d.target.candidate : ""), strategy(d.target),
      health(d)]);
  };
  onSubmit("create-deployment", async (form) => {
    const data = formData(form);
    if (data.version) data.version = Number(data.version);
    await api("POST", "/api/v1/deployments", data);
    form.reset();
    notice("deployed " + data.name);
    await load();
  });
  await load();
  window.setInterval(() => load().catch(failed), 3000);
}

window.MlportConsole = { el, api, rows, notice, failed, when, size, onSubmit, formData, listOf, health, strategy };

function signOut() {
  api("POST", "/ui/logout").catch(() => null).then(() => window.location.assign("/ui/login"));
}

document.addEventListener("DOMContentLoaded", () => {
  const out = document.getElementById("sign-out");
  if (out) out.addEventListener("click", signOut);
  const pages = { models: modelsPage, model: modelPage, deployments: deploymentsPage,
    deployment: () => window.MlportDeployment.page(), admin: () => window.MlportAdmin.page() };
  const run = pages[DATA.page];
  if (run) Promise.resolve(run()).catch(failed);
});
