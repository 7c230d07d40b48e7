// /docs: a browsable reference of /api/openapi.json, rendered here with no
// library and nothing fetched from elsewhere. Text goes in as text nodes.
"use strict";
(function () {
  const METHODS = ["get", "post", "put", "patch", "delete"];

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }

  function anchor(kind, name) {
    return kind + "-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
  }

  // A schema in a few words, with a link for a reference.
  function typeOf(s) {
    if (!s) return "";
    if (s.$ref) {
      const name = s.$ref.split("/").pop();
      return el("a", { href: "#" + anchor("schema", name) }, name);
    }
    for (const key of ["oneOf", "anyOf", "allOf"]) {
      if (Array.isArray(s[key])) {
        const span = el("span");
        s[key].forEach((x, i) => { if (i) span.append(" | "); span.append(typeOf(x)); });
        return span;
      }
    }
    let t = Array.isArray(s.type) ? s.type.join(" | ") : (s.type || "object");
    if (t === "array" || (Array.isArray(s.type) && s.type.includes("array"))) {
      const span = el("span", {}, "array of ");
      span.append(typeOf(s.items));
      return span;
    }
    if (s.format) t += " (" + s.format + ")";
    if (Array.isArray(s.enum)) t += ": " + s.enum.join(", ");
    return t;
  }

  function table(head, rows) {
    if (!rows.length) return null;
    return el("table", {},
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
  }

  function bodyOf(content) {
    if (!content) return null;
    const [type, media] = Object.entries(content)[0] || [];
    if (!type) return null;
    const span = el("span", {}, type + " ");
    if (media && media.schema) span.append(typeOf(media.schema));
    return span;
  }

  function operation(path, method, op) {
    const id = anchor("op", method + path);
    const params = (op.parameters || []).map((p) => [
      p.name, p.in, p.required ? "required" : "optional", typeOf(p.schema), p.description || "",
    ]);
    const responses = Object.entries(op.responses || {}).map(([status, r]) => [
      status, r.description || "", bodyOf(r.content) || "",
    ]);
    const request = op.requestBody ? el("p", {}, "Body: ", bodyOf(op.requestBody.content) || "",
      op.requestBody.description ? " - " + op.requestBody.description : "") : null;
    const auth = (op.security || []).map((s) => Object.keys(s).join(", ")).filter(Boolean);
    return el("section", { class: "card op", id, "data-testid": "operation" },
      el("h3", {}, el("span", { class: "method " + method }, method), el("code", { class: "path" }, path)),
      op.summary ? el("p", {}, op.summary) : null,
      op.description && op.description !== op.summary ? el("p", { class: "muted" }, op.description) : null,
      auth.length ? el("p", { class: "muted" }, "Authentication: " + auth.join(" or ")) : null,
      table(["Parameter", "In", "", "Type", ""], params),
      request,
      table(["Status", "Meaning", "Body"], responses));
  }

  function schema(name, s) {
    const required = new Set(s.required || []);
    const rows = Object.entries(s.properties || {}).map(([p, ps]) => [
      p, typeOf(ps), required.has(p) ? "required" : "", ps.description || "",
    ]);
    return el("section", { class: "card op", id: anchor("schema", name), "data-testid": "schema" },
      el("h3", {}, el("code", {}, name)),
      s.description ? el("p", { class: "muted" }, s.description) : null,
      rows.length ? table(["Field", "Type", "", ""], rows) : el("p", {}, typeOf(s)));
  }

  function render(doc) {
    const toc = document.getElementById("toc");
    const out = document.getElementById("reference");
    out.textContent = "";
    out.append(el("h1", {}, (doc.info && doc.info.title) || "API", " ",
      el("span", { class: "muted" }, (doc.info && doc.info.version) || "")));
    if (doc.info && doc.info.description) out.append(el("p", {}, doc.info.description));
    const byTag = new Map();
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of METHODS) {
        const op = item[method];
        if (!op) continue;
        const tag = (op.tags && op.tags[0]) || "other";
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push([path, method, op]);
      }
    }
    for (const [tag, ops] of byTag) {
      out.append(el("h2", { id: anchor("tag", tag) }, tag));
      toc.append(el("a", { href: "#" + anchor("tag", tag) }, tag + " (" + ops.length + ")"));
      for (const [path, method, op] of ops) out.append(operation(path, method, op));
    }
    const schemas = (doc.components && doc.components.schemas) || {};
    const names = Object.keys(schemas).sort();
    if (names.length) {
      out.append(el("h2", { id: "schemas" }, "Schemas"));
      toc.append(el("a", { href: "#schemas" }, "Schemas (" + names.length + ")"));
      for (const name of names) out.append(schema(name, schemas[name]));
    }
    if (location.hash) {
      const target = document.getElementById(location.hash.slice(1));
      if (target) target.scrollIntoView();
    }
  }

  fetch("/api/openapi.json")
    .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(render)
    .catch((e) => {
      const out = document.getElementById("reference");
      out.textContent = "";
      out.append(el("p", { class: "error", role: "alert" }, "Cannot load /api/openapi.json: " + e.message));
    });
})();
