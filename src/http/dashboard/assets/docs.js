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

  // Prose with `code` spans rendered as code (never as HTML), and
  // [text](#anchor) links kept as their text.
  function prose(tag, text, attrs) {
    const e = el(tag, attrs || {});
    String(text).replace(/\[([^\]]+)\]\([^)]*\)/g, "$1").split("`").forEach((part, i) => {
      if (part === "") return;
      e.append(i % 2 ? el("code", {}, part) : document.createTextNode(part.replace(/\*\*/g, "")));
    });
    return e;
  }

  // How an operation authenticates, in words (the document's scheme names
  // are identifiers: tenantKey, tenantKeyHeader, adminToken).
  function authWords(op, schemes) {
    const said = (op.security || []).flatMap((s) => Object.keys(s)).map((name) => {
      const sc = schemes[name] || {};
      if (sc.type === "apiKey") return "the key in the " + sc.name + " header";
      if (sc.type === "http" && sc.scheme === "bearer") {
        const what = (sc.description || name).replace(/ \(`[^`]*`\)/, "").replace(/^A /, "a ").replace(/^The /, "the ");
        return what + " as Authorization: Bearer";
      }
      return name;
    });
    return [...new Set(said)];
  }

  // A value of schema `s` for an example: its own example, its first enum
  // value, else one made from its type and name.
  function sample(s, doc, name, depth) {
    if (!s || depth > 6) return null;
    if (s.example !== undefined) return s.example;
    if (s.$ref) {
      const ref = s.$ref.split("/").pop();
      return sample(((doc.components || {}).schemas || {})[ref], doc, name, depth + 1);
    }
    for (const key of ["oneOf", "anyOf", "allOf"]) {
      if (Array.isArray(s[key])) {
        const pick = s[key].find((x) => x.type !== "null") || s[key][0];
        return sample(pick, doc, name, depth + 1);
      }
    }
    if (Array.isArray(s.enum) && s.enum.length) return s.enum.find((v) => v !== null) ?? null;
    const type = Array.isArray(s.type) ? s.type.find((t) => t !== "null") : s.type;
    if (type === "array") return [sample(s.items, doc, name, depth + 1)];
    if (type === "object" || s.properties) {
      const out = {};
      for (const [p, ps] of Object.entries(s.properties || {})) out[p] = sample(ps, doc, p, depth + 1);
      return out;
    }
    if (type === "integer") return /port/i.test(name || "") ? 8080 : 1;
    if (type === "number") return /usd|cost|price/i.test(name || "") ? 0.25 : 1.5;
    if (type === "boolean") return true;
    if (type === "string") {
      if (s.format === "date-time") return "2026-12-01T00:00:00Z";
      if (/^id$|Id$/.test(name || "")) return "acme";
      return name || "text";
    }
    return null;
  }

  function jsonOf(content) {
    const media = content && (content["application/json"] || null);
    return media && media.schema ? media.schema : null;
  }

  // An example of the call as curl sends it, and of each answer with a
  // JSON body: made from the document's schemas.
  function examples(path, method, op, doc, schemes) {
    const lines = ["curl -X " + method.toUpperCase() + " '" + location.origin +
      path.replace(/\{([^}]+)\}/g, (_, p) => (p === "id" ? "acme" : p)) + "'"];
    const auth = (op.security || []).flatMap((s) => Object.keys(s))[0];
    if (auth) {
      const sc = schemes[auth] || {};
      lines.push(sc.type === "apiKey" ? "  -H '" + sc.name + ": $KEY'"
        : "  -H 'Authorization: Bearer " + (auth === "adminToken" ? "$TOLLGATE_ADMIN_TOKEN" : "$KEY") + "'");
    }
    const body = op.requestBody && jsonOf(op.requestBody.content);
    if (body) {
      lines.push("  -H 'Content-Type: application/json'");
      lines.push("  -d '" + JSON.stringify(sample(body, doc, "", 0)) + "'");
    }
    const box = el("div", { class: "examples", "data-testid": "example" },
      el("p", { class: "muted small" }, "Example"),
      el("pre", { class: "code", tabindex: "0" }, el("code", {}, lines.join(" \\\n"))));
    for (const [status, r] of Object.entries(op.responses || {})) {
      const schema = jsonOf(r.content);
      if (!schema) continue;
      box.append(prose("p", status + " " + (r.description || ""), { class: "muted small" }),
        el("pre", { class: "code", tabindex: "0" }, el("code", { "data-testid": "answer" }, JSON.stringify(sample(schema, doc, "", 0), null, 2))));
      break;
    }
    return box;
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

  function operation(path, method, op, doc) {
    const schemes = (doc.components && doc.components.securitySchemes) || {};
    const id = anchor("op", method + path);
    const params = (op.parameters || []).map((p) => [
      p.name, p.in, p.required ? "required" : "optional", typeOf(p.schema), prose("span", p.description || ""),
    ]);
    const responses = Object.entries(op.responses || {}).map(([status, r]) => [
      status, prose("span", r.description || ""), bodyOf(r.content) || "",
    ]);
    const request = op.requestBody ? el("p", {}, "Body: ", bodyOf(op.requestBody.content) || "",
      op.requestBody.description ? prose("span", " - " + op.requestBody.description) : "") : null;
    const auth = authWords(op, schemes);
    return el("section", { class: "card op", id, "data-testid": "operation" },
      el("h3", {}, el("span", { class: "method " + method }, method), el("code", { class: "path" }, path)),
      op.summary ? prose("p", op.summary) : null,
      op.description && op.description !== op.summary ? prose("p", op.description, { class: "muted" }) : null,
      auth.length ? el("p", { class: "muted" }, "Authentication: " + auth.join(", or ")) : null,
      table(["Parameter", "In", "Required", "Type", "About"], params),
      request,
      table(["Status", "Meaning", "Body"], responses),
      examples(path, method, op, doc, schemes));
  }

  function schema(name, s) {
    const required = new Set(s.required || []);
    const rows = Object.entries(s.properties || {}).map(([p, ps]) => [
      p, typeOf(ps), required.has(p) ? "required" : "", prose("span", ps.description || ""),
    ]);
    return el("section", { class: "card op", id: anchor("schema", name), "data-testid": "schema" },
      el("h3", {}, el("code", {}, name)),
      s.description ? prose("p", s.description, { class: "muted" }) : null,
      rows.length ? table(["Field", "Type", "Required", "About"], rows) : el("p", {}, typeOf(s)));
  }

  // The guides the reference starts with: these sections of docs/API.md
  // (served beside this page), so they are written once.
  const GUIDES = ["Errors", "Authentication", "Rate-limit headers"];

  // docs/API.md's section `title` (to the next heading of its level), in
  // the little Markdown it uses: paragraphs, lists, tables, code blocks.
  function guide(md, title) {
    const lines = md.split("\n");
    const start = lines.findIndex((l) => l === "## " + title);
    if (start < 0) return null;
    const section = el("section", { class: "card op guide", id: anchor("guide", title), "data-testid": "guide" },
      el("h2", {}, title));
    let i = start + 1;
    let para = [];
    const flush = () => {
      if (para.length) section.append(prose("p", para.join(" ")));
      para = [];
    };
    while (i < lines.length && !lines[i].startsWith("## ")) {
      const line = lines[i];
      if (line.startsWith("### ")) {
        flush();
        section.append(prose("h3", line.slice(4)));
      } else if (line.startsWith("```")) {
        flush();
        const code = [];
        for (i += 1; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
        section.append(el("pre", { class: "code", tabindex: "0" }, el("code", {}, code.join("\n"))));
      } else if (line.startsWith("|")) {
        flush();
        const rows = [];
        for (; i < lines.length && lines[i].startsWith("|"); i++) {
          if (/^\|[\s|:-]+\|?$/.test(lines[i])) continue;
          rows.push(lines[i].slice(1, lines[i].endsWith("|") ? -1 : undefined).split(" | ").map((c) => c.trim()));
        }
        i -= 1;
        const [head, ...body] = rows;
        const t = table(head.map((h) => h.replace(/`/g, "")), body.map((r) => r.map((c) => prose("span", c))));
        if (t) section.append(el("div", { class: "table-wrap", tabindex: "0" }, t));
      } else if (/^- /.test(line)) {
        flush();
        const list = el("ul");
        for (; i < lines.length && /^(- |  )/.test(lines[i]); i++) {
          if (lines[i].startsWith("- ")) list.append(prose("li", lines[i].slice(2)));
          else list.lastChild.append(prose("span", " " + lines[i].trim()));
        }
        i -= 1;
        section.append(list);
      } else if (line.trim() === "") {
        flush();
      } else {
        para.push(line.trim());
      }
      i += 1;
    }
    flush();
    return section;
  }

  function render(doc, md) {
    const toc = document.getElementById("toc");
    const out = document.getElementById("reference");
    out.textContent = "";
    out.append(el("h1", {}, (doc.info && doc.info.title) || "API", " ",
      el("span", { class: "muted" }, (doc.info && doc.info.version) || "")));
    if (doc.info && doc.info.description) out.append(prose("p", doc.info.description));
    for (const title of GUIDES) {
      const g = md && guide(md, title);
      if (!g) continue;
      out.append(g);
      toc.append(el("a", { href: "#" + anchor("guide", title) }, title));
    }
    // The document's tags in its own order: enforcement first, the
    // dashboard's page last.
    const order = (doc.tags || []).map((t) => t.name);
    const about = new Map((doc.tags || []).map((t) => [t.name, t.description]));
    const byTag = new Map(order.map((t) => [t, []]));
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
      if (!ops.length) continue;
      out.append(el("h2", { id: anchor("tag", tag) }, tag));
      if (about.get(tag)) out.append(prose("p", about.get(tag), { class: "muted" }));
      toc.append(el("a", { href: "#" + anchor("tag", tag) }, tag + " (" + ops.length + ")"));
      for (const [path, method, op] of ops) out.append(operation(path, method, op, doc));
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

  const guides = fetch("/docs/API.md").then((r) => (r.ok ? r.text() : null)).catch(() => null);
  fetch("/api/openapi.json")
    .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then((doc) => guides.then((md) => render(doc, md)))
    .catch((e) => {
      const out = document.getElementById("reference");
      out.textContent = "";
      out.append(el("p", { class: "error", role: "alert" }, "Cannot load /api/openapi.json: " + e.message));
    });
})();
