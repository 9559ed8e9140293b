// Try it's "Explain" button: the last prediction tried, sent with the same body to the gateway's
// POST /deployments/NAME/v2/models/NAME/explain (a describe/eval body is first written as the OIP request it
// stands for, from the signature; a TF Serving body goes to v1/models/NAME:explain). The answer is drawn by
// attributions.js; an image tried is sent with Accept: image/png and its heat map shown. Errors are shown as
// they come.
"use strict";

window.MlportExplain = (() => {
  const C = window.MlportConsole;

  let ctx = null;
  let last = null;
  const cache = {};
  let imageUrl = null;

  function tried(path, init, status) {
    // called by Try it after each request: a POST answered 2xx can be explained
    last = init.method === "POST" && status >= 200 && status < 300 ? { path, init } : null;
    for (const key of Object.keys(cache)) delete cache[key]; // the signature is read again: a new version may differ
    document.getElementById("explain").disabled = last === null;
  }

  async function read(path) {
    if (!(path in cache)) {
      const r = await ctx.gatewayFetch(path, { method: "GET" });
      if (!r.ok) throw new Error(path + " through the gateway answered HTTP " + r.status);
      cache[path] = await r.json();
    }
    return cache[path];
  }

  function shapeOf(value, rank) {
    const shape = [];
    for (let v = value; Array.isArray(v); v = v[0]) shape.push(v.length);
    while (shape.length < rank) shape.unshift(1);
    return shape;
  }

  function tensor(spec, value) {
    return { name: spec.name, datatype: spec.datatype, shape: shapeOf(value, (spec.shape || []).length),
      data: Array.isArray(value) ? value.flat(Infinity) : [value] };
  }

  function columns(spec, values) {
    // named fields (a value or a list of values each) as the columns of one input, in the order describe gives
    const lists = values.map((v) => (Array.isArray(v) ? v.flat(Infinity) : [v]));
    const data = [];
    for (let row = 0; row < lists[0].length; row++) for (const list of lists) data.push(list[row]);
    return { name: spec.name, datatype: spec.datatype, shape: [lists[0].length, lists.length], data };
  }

  async function oipBody(text) {
    // an OIP inference request as it is; a describe/eval body made into the one it stands for: its inputs by
    // name (from the OIP metadata), and the fields a model config maps onto the columns of one input
    const body = JSON.parse(text);
    if (body && Array.isArray(body.inputs)) return text;
    if (!body || typeof body !== "object" || Array.isArray(body)) throw new Error("the body tried is not a JSON object");
    const specs = (await read("v2/models/" + encodeURIComponent(ctx.name))).inputs || [];
    const inputs = specs.filter((s) => s.name in body).map((s) => tensor(s, body[s.name]));
    const fields = ((await read("describe")).inputs || []).map((i) => i.name)
      .filter((f) => f in body && !inputs.some((t) => t.name === f));
    const left = specs.filter((s) => !inputs.some((t) => t.name === s.name));
    if (fields.length && left.length !== 1) {
      throw new Error("send an inference request: the fields " + fields.join(", ") + " are not the columns of one input");
    }
    if (fields.length) inputs.push(columns(left[0], fields.map((f) => body[f])));
    if (!inputs.length) throw new Error("the body tried names none of the model's inputs: send an inference request");
    return JSON.stringify({ inputs });
  }

  async function request() {
    // the path and init of the explanation of the last prediction tried
    const type = String((last.init.headers || {})["content-type"] || "");
    const name = encodeURIComponent(ctx.name);
    if (!type.includes("json")) {
      return ["v2/models/" + name + "/explain", { method: "POST", body: last.init.body,
        headers: { "content-type": type, accept: "image/png" } }];
    }
    const headers = { "content-type": "application/json", accept: "application/json" };
    if (last.path.startsWith("v1/")) { // a TF Serving predict body: TF Serving's explain verb
      return ["v1/models/" + name + ":explain", { method: "POST", body: last.init.body, headers }];
    }
    return ["v2/models/" + name + "/explain", { method: "POST", body: await oipBody(last.init.body), headers }];
  }

  async function explain() {
    if (!last) return;
    const status = document.getElementById("explain-status");
    const box = document.getElementById("explain-result");
    status.textContent = "explaining...";
    box.textContent = "";
    box.hidden = false;
    if (imageUrl) URL.revokeObjectURL(imageUrl);
    imageUrl = null;
    const [path, init] = await request();
    const r = await ctx.gatewayFetch(path, init);
    status.textContent = "HTTP " + r.status + " - version " + (r.headers.get("x-mlport-version") || "-");
    const type = r.headers.get("content-type") || "";
    if (r.ok && type.startsWith("image/")) {
      imageUrl = URL.createObjectURL(await r.blob());
      box.append(C.el("p", { text: "heat map of the attributions over the image (drawn by the model server)" }),
        C.el("img", { class: "heatmap", alt: "heat map of the attributions", src: imageUrl }));
      return;
    }
    const text = await r.text();
    let answer;
    try { answer = JSON.parse(text); } catch (e) { answer = { error: text.slice(0, 2000) || r.statusText }; }
    if (!r.ok || answer === null || typeof answer !== "object") {
      const message = answer && answer.error ? String(answer.error) : r.statusText;
      box.appendChild(C.el("p", { class: "error", role: "alert", text: "the explanation failed: HTTP " + r.status + ": " + message }));
      return;
    }
    window.MlportAttributions.show(box, answer);
  }

  return { tried, setup: (context) => {
    ctx = context;
    const button = document.getElementById("explain");
    button.addEventListener("click", () => {
      button.disabled = true; // one explanation at a time
      explain().catch((e) => {
        document.getElementById("explain-status").textContent = "";
        document.getElementById("explain-result").appendChild(C.el("p", { class: "error", role: "alert",
          text: "the explanation failed: " + e.message }));
      }).finally(() => { button.disabled = last === null; });
    });
  } };
})();
