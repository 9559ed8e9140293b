// Try it's "Explain" button: the last prediction tried, sent with the same body to the gateway's
// POST /deployments/NAME/v2/models/NAME/explain (a describe/eval body is first written as the OIP request it
// stands for, from the signature; a TF Serving body goes to v1/models/NAME:explain). The answer is drawn by
// attributions.js; an image tried is sent with Accept: image/png and its heat map shown. Errors are shown as
// they come.
"use strict";

window.MlportExplain = (() => {
  const C = window.MlportConsole;

  const OIP_TYPES = { bool: "BOOL", uint8: "UINT8", uint16: "UINT16", uint32: "UINT32", uint64: "UINT64", int8: "INT8",
    int16: "INT16", int32: "INT32", int64: "INT64", float16: "FP16", float32: "FP32", float64: "FP64", string: "BYTES",
    bytes: "BYTES" };

  let ctx = null;
  let last = null;
  let signature = null;

  function tried(path, init, status) {
    // called by Try it after each request: a POST answered 2xx can be explained
    last = init.method === "POST" && status >= 200 && status < 300 ? { path, init } : null;
    document.getElementById("explain").disabled = last === null;
  }

  async function describe() {
    if (!signature) {
      const r = await ctx.gatewayFetch("describe", { method: "GET" });
      if (!r.ok) throw new Error("describe through the gateway answered HTTP " + r.status);
      signature = await r.json();
    }
    return signature;
  }

  function shapeOf(value, rank) {
    const shape = [];
    for (let v = value; Array.isArray(v); v = v[0]) shape.push(v.length);
    while (shape.length < rank) shape.unshift(1);
    return shape;
  }

  async function oipBody(text) {
    // an OIP inference request as it is; a describe/eval body ({input name: values}) made into one
    const body = JSON.parse(text);
    if (body && Array.isArray(body.inputs)) return text;
    const inputs = [];
    for (const i of (await describe()).inputs || []) {
      if (!body || !(i.name in body)) continue;
      const type = String(i.type || i.datatype || "");
      const value = body[i.name];
      inputs.push({ name: i.name, datatype: OIP_TYPES[type.toLowerCase()] || type.toUpperCase(),
        shape: shapeOf(value, (i.shape || []).length), data: Array.isArray(value) ? value.flat(Infinity) : [value] });
    }
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
    const [path, init] = await request();
    const r = await ctx.gatewayFetch(path, init);
    status.textContent = "HTTP " + r.status + " - version " + (r.headers.get("x-mlport-version") || "-");
    const type = r.headers.get("content-type") || "";
    if (r.ok && type.startsWith("image/")) {
      box.appendChild(C.el("img", { class: "heatmap", alt: "heat map of the attributions", src: URL.createObjectURL(await r.blob()) }));
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
    document.getElementById("explain").addEventListener("click", () => explain().catch((e) => {
      document.getElementById("explain-status").textContent = "";
      document.getElementById("explain-result").appendChild(C.el("p", { class: "error", role: "alert",
        text: "the explanation failed: " + e.message }));
    }));
  } };
})();
