// Tensors of a logged request shown as text. A record holds each numeric tensor as the base64 of its
// little-endian bytes, and each BYTES element as base64: only the bytes of the first MAX_ELEMENTS elements are
// decoded, each text element is cut at MAX_TEXT characters, and the result is only ever set as textContent.
"use strict";

window.MlportTensors = (() => {
  const MAX_ELEMENTS = 200;
  const MAX_TEXT = 200;
  const MAX_TENSORS = 32;
  const SIZES = { BOOL: 1, UINT8: 1, INT8: 1, UINT16: 2, INT16: 2, FP16: 2, UINT32: 4, INT32: 4, FP32: 4,
    UINT64: 8, INT64: 8, FP64: 8 };

  function decode(b64, maxBytes) {
    // the first maxBytes bytes (at most) of a base64 text
    const text = String(b64);
    const chars = Math.min(text.length, Math.ceil(maxBytes / 3) * 4);
    const binary = atob(text.slice(0, chars - (chars % 4)));
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  }

  function half(bits) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exp = (bits >> 10) & 0x1f;
    const frac = bits & 0x3ff;
    if (exp === 0) return sign * Math.pow(2, -14) * (frac / 1024);
    if (exp === 31) return frac ? NaN : sign * Infinity;
    return sign * Math.pow(2, exp - 15) * (1 + frac / 1024);
  }

  function number(value) {
    return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(7)));
  }

  function element(view, type, at) {
    switch (type) {
      case "BOOL": return view.getUint8(at) ? "true" : "false";
      case "UINT8": return String(view.getUint8(at));
      case "INT8": return String(view.getInt8(at));
      case "UINT16": return String(view.getUint16(at, true));
      case "INT16": return String(view.getInt16(at, true));
      case "FP16": return number(half(view.getUint16(at, true)));
      case "UINT32": return String(view.getUint32(at, true));
      case "INT32": return String(view.getInt32(at, true));
      case "FP32": return number(view.getFloat32(at, true));
      case "UINT64": return String(view.getBigUint64(at, true));
      case "INT64": return String(view.getBigInt64(at, true));
      default: return number(view.getFloat64(at, true));
    }
  }

  function utf8(bytes, truncated) {
    // the text of UTF-8 bytes (a character cut at the end of a truncated prefix left out); null for other bytes
    const decoder = new TextDecoder("utf-8", { fatal: true });
    for (let cut = 0; cut <= (truncated ? 3 : 0) && cut <= bytes.length; cut++) {
      try { return decoder.decode(bytes.subarray(0, bytes.length - cut)); } catch (e) { /* try a shorter prefix */ }
    }
    return null;
  }

  function text(b64) {
    // a BYTES element: quoted text when it is UTF-8, else hexadecimal
    const bytes = decode(b64, MAX_TEXT * 4);
    const decoded = utf8(bytes, String(b64).length > Math.ceil(bytes.length / 3) * 4);
    const shown = decoded !== null ? JSON.stringify(decoded) :
      "0x" + Array.from(bytes.slice(0, MAX_TEXT / 2), (b) => b.toString(16).padStart(2, "0")).join("");
    return shown.length > MAX_TEXT ? shown.slice(0, MAX_TEXT) + "..." : shown;
  }

  function elements(t, count) {
    // the first `count` elements of a tensor as strings
    if (t.datatype === "BYTES") return (t.elements || []).slice(0, count).map(text);
    const size = SIZES[t.datatype];
    if (!size || typeof t.data !== "string") throw new Error("not shown: " + String(t.datatype).slice(0, 20) + " data");
    const bytes = decode(t.data, count * size);
    const view = new DataView(bytes.buffer);
    const out = [];
    for (let at = 0; at + size <= bytes.length && out.length < count; at += size) out.push(element(view, t.datatype, at));
    return out;
  }

  function format(t) {
    // one line per row of the last dimension: "[1, 2, 3]"
    const shape = Array.isArray(t.shape) ? t.shape.map(Number) : [];
    const total = shape.reduce((n, d) => n * d, 1);
    let values;
    try {
      values = elements(t, Math.min(total, MAX_ELEMENTS));
    } catch (e) {
      return e.message;
    }
    const width = shape.length >= 2 && shape[shape.length - 1] > 0 ? shape[shape.length - 1] : values.length || 1;
    const lines = [];
    for (let i = 0; i < values.length; i += width) lines.push("[" + values.slice(i, i + width).join(", ") + "]");
    if (total > values.length) lines.push("... " + (total - values.length) + " more elements not shown");
    return lines.join("\n");
  }

  function render(box, title, tensors) {
    // a heading, then for each tensor its name, datatype and shape, and its values
    const C = window.MlportConsole;
    box.appendChild(C.el("h4", { text: title }));
    if (tensors === null || tensors === undefined) {
      box.appendChild(C.el("p", { text: "not logged (the deployment's logging payload leaves them out)" }));
      return;
    }
    for (const t of tensors.slice(0, MAX_TENSORS)) {
      const shape = Array.isArray(t.shape) ? t.shape.join(", ") : "";
      box.appendChild(C.el("p", { class: "tensor" }, C.el("strong", { text: String(t.name) }),
        " " + String(t.datatype) + " [" + shape + "]"));
      box.appendChild(C.el("pre", { class: "tensor", text: format(t) }));
    }
    if (tensors.length > MAX_TENSORS) box.appendChild(C.el("p", { text: (tensors.length - MAX_TENSORS) + " more tensors" }));
  }

  return { render, format, MAX_ELEMENTS };
})();
