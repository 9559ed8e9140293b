"use strict";
// Everything shown comes from this server: /openapi.json, /models and the answers to what you send.
// Text is always set with textContent, never parsed as HTML.

const $ = (id) => document.getElementById(id);
// inputs: per served model, its inputs as the form shows them ({name, type, shape, kind: image|text|json}),
// written into the page by the server; files: the image chosen for each image input.
const page = { spec: null, base: "", ops: [], op: null, models: [], inputs: {}, files: {} };

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJson(url) {
  const answer = await fetch(url, { headers: { Accept: "application/json" } });
  if (!answer.ok) throw new Error(url + " answered " + answer.status);
  return answer.json();
}

// Follows a local "#/components/..." reference.
function deref(obj) {
  if (!obj || typeof obj.$ref !== "string") return obj;
  return obj.$ref.slice(2).split("/").reduce((node, key) => node[key], page.spec);
}

function currentModel() {
  return $("model").value;
}

// ------------------------------------------------------------------ models
function renderModels() {
  const list = $("models");
  const select = $("model");
  list.replaceChildren();
  select.replaceChildren();
  if (page.models.length === 0) list.append(el("li", {}, "no model is served"));
  for (const m of page.models) {
    const versions = m.versions.map((v) => v.version + " " + v.state).join(", ");
    const item = el("li", {}, el("b", {}, m.name), " ",
      el("span", { className: "badge" + (m.ready ? " ready" : "") }, m.ready ? "ready" : "not ready"),
      " ", el("span", { className: "summary" }, "versions: " + (versions || "none")));
    item.dataset.model = m.name;
    list.append(item);
    select.append(el("option", { value: m.name }, m.name));
  }
}

async function renderSignature() {
  const box = $("signature");
  box.replaceChildren();
  const name = currentModel();
  if (!name) return;
  try {
    const sig = await getJson(page.base + "/models/" + encodeURIComponent(name) + "/describe");
    const table = el("table", {}, el("tr", {}, el("th", {}, ""), el("th", {}, "name"),
      el("th", {}, "type"), el("th", {}, "shape")));
    for (const [kind, specs] of [["input", sig.inputs], ["output", sig.outputs]]) {
      for (const s of specs) {
        table.append(el("tr", {}, el("td", {}, kind), el("td", {}, s.name), el("td", {}, s.type),
          el("td", {}, "[" + s.shape.join(", ") + "]")));
      }
    }
    box.append(table);
  } catch (err) {
    box.append(el("p", { className: "summary" }, "no signature: " + err.message));
  }
}

// Indented JSON, with arrays of plain values kept on one line.
function pretty(value) {
  return JSON.stringify(value, null, 2)
    .replace(/\[\s+([^\[\]{}"]*?)\s+\]/g, (all, inner) => "[" + inner.replace(/\s+/g, " ") + "]");
}

// ------------------------------------------------------------------ endpoints
function collectOps() {
  const ops = [];
  for (const [path, item] of Object.entries(page.spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const params = (op.parameters || []).map(deref);
      ops.push({ path, method: method.toUpperCase(), op, params, tag: (op.tags || ["Other"])[0] });
    }
  }
  return ops;
}

function renderEndpoints() {
  const box = $("endpoints");
  box.replaceChildren();
  const tags = [...new Set(page.ops.map((o) => o.tag))];
  for (const tag of tags) {
    const list = el("ul");
    for (const entry of page.ops.filter((o) => o.tag === tag)) {
      const button = el("button", { className: "op", type: "button" },
        el("span", { className: "method " + entry.method.toLowerCase() }, entry.method),
        el("code", {}, entry.path), el("span", { className: "summary" }, entry.op.summary || ""));
      button.addEventListener("click", () => selectOp(entry));
      entry.button = button;
      list.append(el("li", {}, button));
    }
    box.append(el("h3", {}, tag), list);
  }
}

function exampleFor(entry, param) {
  const examples = param.examples || {};
  if (examples[currentModel()]) return examples[currentModel()].value;
  return param.example !== undefined ? param.example : "";
}

function selectOp(entry) {
  if (page.op && page.op.button) page.op.button.classList.remove("selected");
  page.op = entry;
  entry.button.classList.add("selected");
  $("description").textContent = entry.op.description || entry.op.summary || "";
  const params = $("params");
  params.replaceChildren();
  for (const p of entry.params.filter((p) => p.in === "path" && p.name !== "name")) {
    const input = el("input", { id: "param-" + p.name, value: exampleFor(entry, p) });
    input.dataset.param = p.name;
    input.addEventListener("input", showUrl);
    params.append(el("label", { htmlFor: input.id }, p.name + (p.description ? " (" + p.description + ")" : "")), input);
  }
  const ok = (entry.op.responses || {})["200"] || {};
  $("accept-types").replaceChildren(...Object.keys(ok.content || {}).map((t) => el("option", { value: t })));
  fillBody();
  renderForm();
  showUrl();
}

// ------------------------------------------------------------------ the inputs form (describe/eval only)
const EVAL_PATH = /^(\/models\/\{name\}(\/versions\/\{version\})?)?\/eval$/;

function formInputs() {
  const entry = page.op;
  if (!entry || entry.method !== "POST" || !EVAL_PATH.test(entry.path)) return null;
  const inputs = page.inputs[currentModel()];
  return inputs && inputs.length ? inputs : null;
}

function formMode() {
  return !$("mode-box").classList.contains("hidden") && $("mode").value === "form";
}

function showMode() {
  const form = formMode();
  $("form-box").classList.toggle("hidden", !form);
  $("body-box").classList.toggle("hidden", form || !(page.op && page.op.op.requestBody));
}

function renderForm() {
  const inputs = formInputs();
  const box = $("form-box");
  box.replaceChildren();
  page.files = {};
  $("mode-box").classList.toggle("hidden", !inputs);
  if (inputs) {
    $("mode").value = inputs.some((i) => i.kind !== "json") ? "form" : "json";
    const example = exampleBody();
    for (const spec of inputs) box.append(fieldFor(spec, example[spec.name]));
  }
  showMode();
}

function exampleBody() {
  const json = (deref(page.op.op.requestBody).content || {})["application/json"] || {};
  const example = (json.examples || {})[currentModel()];
  return example && typeof example.value === "object" ? example.value : {};
}

function fieldFor(spec, example) {
  const id = "input-" + spec.name;
  const text = spec.name + " (" + spec.type + ", shape [" + spec.shape.join(", ") + "])";
  if (spec.kind === "image") return imageField(spec, id, text);
  const area = el("textarea", { id, className: "field", spellcheck: false });
  area.dataset.input = spec.name;
  area.dataset.kind = spec.kind;
  if (spec.kind === "text") {
    return el("div", {}, el("label", { htmlFor: id }, text + ": the text itself, or a JSON array for a batch"), area);
  }
  // one instance (the batch axis of the example dropped), as an image or a text is one
  const one = spec.shape[0] === -1 && Array.isArray(example) && example.length === 1 ? example[0] : example;
  area.value = one === undefined ? "" : JSON.stringify(one);
  return el("div", {}, el("label", { htmlFor: id }, text + ": a JSON value"), area);
}

function imageField(spec, id, text) {
  const picker = el("input", { id, type: "file", accept: "image/png,image/jpeg" });
  picker.dataset.input = spec.name;
  picker.dataset.kind = "image";
  const preview = el("img", { className: "preview hidden", alt: "preview of " + spec.name });
  const chosen = el("span", { className: "summary" }, "no image chosen");
  const drop = el("div", { className: "drop" }, "Drop a PNG or JPEG here, or choose one: ", picker, " ", chosen, preview);
  drop.id = "drop-" + spec.name;
  const take = (file) => {
    if (!file) return;
    if (!/^image\/(png|jpeg)$/.test(file.type)) {
      chosen.textContent = file.name + " is not a PNG or JPEG image";
      return;
    }
    page.files[spec.name] = file;
    chosen.textContent = file.name + " (" + file.size + " bytes)";
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.classList.remove("hidden");
  };
  picker.addEventListener("change", () => take(picker.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const files = event.dataTransfer.files;
    if (files.length) picker.files = files;  // the picker shows the dropped file's name too
    take(files[0]);
  });
  return el("div", {}, el("label", { htmlFor: id }, text + ": an image"), drop);
}

// The form's values as multipart/form-data: images as they are, text as text, the rest as JSON parts.
function formBody() {
  const form = new FormData();
  for (const field of $("form-box").querySelectorAll("[data-input]")) {
    const name = field.dataset.input;
    if (field.dataset.kind === "image") {
      const file = page.files[name];
      if (!file) throw new Error("choose an image for input '" + name + "'");
      form.append(name, file, file.name);
    } else if (field.dataset.kind === "text") {
      form.append(name, field.value);
    } else {
      form.append(name, new Blob([field.value], { type: "application/json" }), name + ".json");
    }
  }
  return form;
}

function fillBody() {
  const entry = page.op;
  if (!entry || !entry.op.requestBody) return;
  const json = (deref(entry.op.requestBody).content || {})["application/json"] || {};
  const examples = json.examples || {};
  const example = examples[currentModel()] ? examples[currentModel()].value : json.example;
  $("body").value = example === undefined ? "{}" : pretty(example);
}

function buildUrl() {
  const entry = page.op;
  let path = entry.path.replace("{name}", encodeURIComponent(currentModel()));
  for (const input of $("params").querySelectorAll("input[data-param]")) {
    path = path.replace("{" + input.dataset.param + "}", encodeURIComponent(input.value));
  }
  return page.base + path;
}

function showUrl() {
  if (page.op) $("url").textContent = page.op.method + " " + buildUrl();
}

// ------------------------------------------------------------------ sending
async function send() {
  const entry = page.op;
  if (!entry) return;
  const headers = {};
  const init = { method: entry.method, headers };
  const status = $("answer-status");
  const out = $("answer");
  const image = $("answer-image");
  image.classList.add("hidden");
  out.textContent = "";
  try {
    if (formMode()) {
      init.body = formBody();  // the browser writes its Content-Type with the boundary
    } else if (entry.op.requestBody) {
      headers["Content-Type"] = "application/json";
      init.body = $("body").value;
    }
  } catch (err) {
    status.textContent = "not sent: " + err.message;
    return;
  }
  if ($("accept").value.trim()) headers.Accept = $("accept").value.trim();
  status.textContent = "sending…";
  const started = performance.now();
  try {
    const answer = await fetch(buildUrl(), init);
    const type = answer.headers.get("content-type") || "";
    const ms = Math.round(performance.now() - started);
    // the body is read before the status is shown, so a status always comes with its own answer
    const blob = type.startsWith("image/") ? await answer.blob() : null;
    const text = blob ? "" : (type.includes("json") ? pretty(await answer.json()) : await answer.text());
    if (blob) {
      image.src = URL.createObjectURL(blob);
      image.classList.remove("hidden");
    }
    out.textContent = text;
    status.textContent = answer.status + " " + answer.statusText + " · " + (type || "no content type") + " · " + ms + " ms";
  } catch (err) {
    status.textContent = "failed: " + err.message;
  }
}

// ------------------------------------------------------------------ start
async function main() {
  try {
    page.spec = await getJson("openapi.json");
    page.base = ((page.spec.servers || [{}])[0].url || "").replace(/\/$/, "");
    page.models = (await getJson(page.base + "/models")).models;
    page.inputs = JSON.parse($("try").dataset.inputs || "{}");
  } catch (err) {
    $("status").textContent = "could not load the API description: " + err.message;
    document.body.dataset.state = "error";
    return;
  }
  $("status").textContent = "version " + page.spec.info.version + " · " + page.models.length + " model(s)";
  page.ops = collectOps();
  renderModels();
  renderEndpoints();
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && page.models.some((m) => m.name === wanted)) $("model").value = wanted;
  $("mode").addEventListener("change", showMode);
  $("model").addEventListener("change", () => {
    if (page.op) selectOp(page.op);
    renderSignature();
  });
  $("send").addEventListener("click", send);
  const first = page.ops.find((o) => o.path === "/models/{name}/eval") || page.ops[0];
  if (first) selectOp(first);
  await renderSignature();
  document.body.dataset.state = "ready";
}

main();
