// Tollgate's operator console: plans, tenants and keys through the admin
// API, with its JSON errors shown as they come. Plain JS, no dependencies.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const { num, usd, request, keyFromHash, isTenantKey, kept, askToSwitch } = window.Tollgate;
  // Figures (requests, tokens, cost, quota) are read for this many tenants.
  const MAX_FIGURES = 100;
  const REFRESH_MS = 15000;
  // Tenants a page of the list shows.
  const PAGE = 50;
  const state = { token: null, timer: null, attempt: 0, plans: [], tenants: [], figures: {}, sort: { by: "requests", desc: true }, keysOf: null, arm: null, search: "", page: 0 };
  const pct = (n) => (n === null || n === undefined ? "—" : n.toFixed(1) + "%");

  const api = (method, path, body) => request(state.token, method, path, body);

  // An error where it belongs: beside the form it came from (`where`),
  // else at the top of the console.
  function showError(e, where) {
    const el = $(where || "console-error");
    el.hidden = !e;
    el.textContent = e ? (e.code ? e.code + ": " : "") + e.message : "";
  }

  // Runs an admin action; its error, if any, is shown (beside its form);
  // the lists reload.
  async function act(work, where) {
    try {
      await work();
      showError(null, where);
    } catch (e) {
      showError(e, where);
    }
    await load();
  }

  function cell(row, content, cls) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content);
    else td.textContent = content;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function button(label, testid, onClick, cls) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.className = cls || "ghost small-button";
    if (testid) b.dataset.testid = testid;
    b.addEventListener("click", onClick);
    return b;
  }

  // A destructive button asks twice: the first click arms it for 5 s.
  function guarded(label, testid, onConfirm) {
    const b = button(label, testid, () => {
      if (state.arm === testid) {
        state.arm = null;
        onConfirm();
      } else {
        state.arm = testid;
        b.textContent = "Confirm";
        setTimeout(() => { if (state.arm === testid) { state.arm = null; b.textContent = label; } }, 5000);
      }
    }, "ghost small-button danger");
    return b;
  }

  // Each cell names its column (`data-label`), which a phone shows beside
  // the value when the rows are stacked as cards.
  function labelCells(table) {
    const names = [...table.querySelectorAll("th")].map((th) => th.textContent.replace(/ [↑↓]$/, ""));
    for (const tr of table.querySelectorAll("tr")) {
      [...tr.children].forEach((td, i) => { if (td.tagName === "TD") td.dataset.label = names[i] || ""; });
    }
  }

  const NUMERIC = ["requests", "tokens", "cost", "quota"];

  function head(table, columns) {
    table.replaceChildren();
    table.classList.add("stack");
    const tr = document.createElement("tr");
    for (const [label, sortKey, numeric] of columns) {
      const th = document.createElement("th");
      if (numeric || NUMERIC.includes(sortKey)) th.className = "num";
      if (sortKey) {
        const b = button(label + (state.sort.by === sortKey ? (state.sort.desc ? " ↓" : " ↑") : ""), "sort-" + sortKey, () => {
          state.sort = { by: sortKey, desc: state.sort.by === sortKey ? !state.sort.desc : sortKey !== "id" };
          renderTenants();
        }, "sort");
        th.appendChild(b);
      } else {
        th.textContent = label;
      }
      tr.appendChild(th);
    }
    table.appendChild(tr);
  }

  // ---- data ----------------------------------------------------------------

  async function load() {
    try {
      const [plans, tenants] = await Promise.all([api("GET", "/api/admin/plans"), api("GET", "/api/admin/tenants")]);
      state.plans = plans.data;
      state.tenants = tenants.data;
      const shown = state.tenants.slice(0, MAX_FIGURES);
      const figures = await Promise.all(shown.map(async (t) => {
        const base = "/api/admin/tenants/" + encodeURIComponent(t.id);
        try {
          const [usage, report] = await Promise.all([api("GET", base + "/usage"), api("GET", base + "/api-usage?range=month")]);
          return [t.id, { requests: report.summary.totalRequests, tokens: report.summary.totalTokens, cost: report.summary.estimatedCostUsd, quota: usage.calls.percent }];
        } catch (_) {
          return [t.id, null];
        }
      }));
      state.figures = Object.fromEntries(figures);
    } catch (e) {
      if (e.status === 401 || e.status === 403) return showLogin("That token was not accepted.");
      showError(e);
    }
    renderPlans();
    renderTenants();
    if (state.keysOf) await loadKeys();
  }

  async function loadKeys() {
    const id = state.keysOf;
    $("keys-card").hidden = false;
    $("keys-tenant").textContent = id;
    let keys = [];
    try {
      keys = (await api("GET", "/api/admin/tenants/" + encodeURIComponent(id) + "/keys")).data;
    } catch (e) {
      showError(e);
    }
    const table = $("keys");
    head(table, [["Name"], ["Key"], ["Created"], ["State"], [""]]);
    for (const k of keys) {
      const tr = document.createElement("tr");
      tr.dataset.key = k.id;
      cell(tr, k.name || "—");
      cell(tr, k.prefix + "…", "mono");
      cell(tr, new Date(k.createdAt).toLocaleString("en-US", { timeZone: "UTC", dateStyle: "medium", timeStyle: "short", hourCycle: "h23" }) + " UTC");
      cell(tr, k.revokedAt ? "revoked" : "active");
      const actions = document.createElement("span");
      if (!k.revokedAt) {
        actions.appendChild(button("Limits", "limits-key-" + k.prefix, () => openLimits("key", id, k.id)));
        actions.appendChild(guarded("Revoke", "revoke-" + k.prefix, () =>
          act(() => api("DELETE", "/api/admin/tenants/" + encodeURIComponent(id) + "/keys/" + encodeURIComponent(k.id)))));
      }
      cell(tr, actions, "actions");
      table.appendChild(tr);
    }
    labelCells(table);
  }

  // ---- rendering -------------------------------------------------------------

  function renderPlans() {
    const table = $("plans");
    head(table, [["Plan"], ["Calls a month", null, true], ["Tokens a month", null, true], ["Rate limit"], ["Price", null, true], [""]]);
    for (const p of state.plans) {
      const tr = document.createElement("tr");
      tr.dataset.plan = p.id;
      cell(tr, p.name === p.id ? p.id : p.name + " (" + p.id + ")");
      cell(tr, p.monthlyCalls === null ? "unlimited" : num(p.monthlyCalls), "num");
      cell(tr, p.monthlyTokens === null ? "unlimited" : num(p.monthlyTokens), "num");
      cell(tr, p.rateLimit ? num(p.rateLimit.requests) + " / " + p.rateLimit.perSeconds + " s" : "none");
      cell(tr, usd(p.priceUsdMonthly) + " / month", "num");
      const actions = document.createElement("span");
      actions.appendChild(button("Edit", "edit-plan-" + p.id, () => editPlan(p)));
      actions.appendChild(button("Limits", "limits-plan-" + p.id, () => openLimits("plan", p.id)));
      actions.appendChild(guarded("Delete", "delete-plan-" + p.id, () => act(() => api("DELETE", "/api/admin/plans/" + encodeURIComponent(p.id)))));
      cell(tr, actions, "actions");
      table.appendChild(tr);
    }
    labelCells(table);
    // A new tenant starts on the cheapest plan, never the dearest.
    const select = $("tenant-plan");
    const chosen = select.value;
    const byPrice = [...state.plans].sort((a, b) => a.priceUsdMonthly - b.priceUsdMonthly);
    select.replaceChildren(...byPrice.map((p) => new Option(p.name + " (" + p.id + ")", p.id)));
    if (chosen && byPrice.some((p) => p.id === chosen)) select.value = chosen;
  }

  function sortValue(t, by) {
    const f = state.figures[t.id];
    if (by === "id") return t.id;
    if (by === "status") return t.status;
    if (!f) return -1;
    return f[by] === null || f[by] === undefined ? -1 : f[by];
  }

  function renderTenants() {
    const { by, desc } = state.sort;
    const q = state.search.trim().toLowerCase();
    const found = q ? state.tenants.filter((t) => t.id.toLowerCase().includes(q) || (t.name || "").toLowerCase().includes(q)) : state.tenants;
    const sorted = [...found].sort((a, b) => {
      const x = sortValue(a, by), y = sortValue(b, by);
      const c = x < y ? -1 : x > y ? 1 : 0;
      return desc ? -c : c;
    });
    const pages = Math.max(1, Math.ceil(sorted.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const rows = sorted.slice(state.page * PAGE, (state.page + 1) * PAGE);
    $("page-info").textContent = sorted.length === 0 ? "none" :
      num(state.page * PAGE + 1) + "–" + num(state.page * PAGE + rows.length) + " of " + num(sorted.length);
    $("page-prev").disabled = state.page === 0;
    $("page-next").disabled = state.page >= pages - 1;
    $("tenant-count").textContent = num(state.tenants.length) + " tenants" +
      (q ? ", " + num(found.length) + " found" : "") +
      (state.tenants.length > MAX_FIGURES ? " (figures for the first " + MAX_FIGURES + ")" : "") + " · this month";
    const table = $("tenants");
    head(table, [["Tenant", "id"], ["Plan"], ["Status", "status"], ["Requests", "requests"], ["Tokens", "tokens"], ["Cost", "cost"], ["Quota", "quota"], [""]]);
    for (const t of rows) {
      const f = state.figures[t.id] || {};
      const tr = document.createElement("tr");
      tr.dataset.tenant = t.id;
      // The tenant's name leads to its usage on the dashboard.
      const link = document.createElement("a");
      link.href = "/dashboard/api-usage#tenant=" + encodeURIComponent(t.id);
      link.dataset.testid = "dashboard-of-" + t.id;
      link.textContent = t.name && t.name !== t.id ? t.name + " (" + t.id + ")" : t.id;
      cell(tr, link);
      const plan = document.createElement("select");
      plan.setAttribute("aria-label", "Plan of " + t.id);
      plan.dataset.testid = "plan-of-" + t.id;
      plan.replaceChildren(...state.plans.map((p) => new Option(p.id, p.id)));
      plan.value = t.planId;
      plan.addEventListener("change", () => act(() => api("PATCH", "/api/admin/tenants/" + encodeURIComponent(t.id), { planId: plan.value })));
      cell(tr, plan);
      cell(tr, t.status, t.status === "suspended" ? "bad" : "");
      cell(tr, num(f.requests), "num");
      cell(tr, num(f.tokens), "num");
      cell(tr, usd(f.cost), "num");
      cell(tr, pct(f.quota), "num" + (f.quota >= 100 ? " bad" : f.quota >= 80 ? " warn" : ""));
      const actions = document.createElement("span");
      const next = t.status === "suspended" ? "active" : "suspended";
      const setStatus = () => act(() => api("PATCH", "/api/admin/tenants/" + encodeURIComponent(t.id), { status: next }));
      // Suspending refuses every key of the tenant: it asks first.
      actions.appendChild(next === "suspended" ? guarded("Suspend", "status-" + t.id, setStatus) : button("Activate", "status-" + t.id, setStatus));
      actions.appendChild(button("Keys", "keys-" + t.id, () => { state.keysOf = t.id; $("new-key").hidden = true; loadKeys(); }));
      actions.appendChild(button("Limits", "limits-" + t.id, () => openLimits("tenant", t.id)));
      actions.appendChild(guarded("Delete", "delete-" + t.id, () => act(async () => {
        await api("DELETE", "/api/admin/tenants/" + encodeURIComponent(t.id));
        if (state.keysOf === t.id) { state.keysOf = null; $("keys-card").hidden = true; }
      })));
      cell(tr, actions, "actions");
      table.appendChild(tr);
    }
    labelCells(table);
  }

  // ---- limits (SPEC §12) --------------------------------------------------------

  // The limits of a plan or a tenant: the list to edit, and for a tenant,
  // each limit with what is left of it (who is near which limit).
  // A key's own limits (scope key) are edited the same way.
  function limitsPath(kind, id, keyId) {
    if (kind === "plan") return "/api/admin/plans/" + encodeURIComponent(id) + "/limits";
    const tenant = "/api/admin/tenants/" + encodeURIComponent(id);
    return kind === "key" ? tenant + "/keys/" + encodeURIComponent(keyId) + "/limits" : tenant + "/limits";
  }

  async function openLimits(kind, id, keyId) {
    state.limitsOf = { kind, id, keyId };
    const path = limitsPath(kind, id, keyId);
    $("limits-card").hidden = false;
    $("limits-title").textContent = "Limits of " + (kind === "key" ? "key " + keyId + " of " + id : kind + " " + id);
    const table = $("limits-standing");
    table.replaceChildren();
    try {
      const body = await api("GET", path);
      limitRows(body.limits || [], kind);
      if (kind === "tenant") {
        const usage = await api("GET", "/api/admin/tenants/" + encodeURIComponent(id) + "/usage");
        head(table, [["Limit"], ["For"], ["Used", null, true], ["Of", null, true], ["Left", null, true]]);
        for (const l of usage.limits || []) {
          const tr = document.createElement("tr");
          const money = (v) => (l.measure === "spendUsd" ? usd(v) : num(v));
          const share = l.amount ? l.used / l.amount : 0;
          cell(tr, l.name + " · " + words(MEASURES, l.measure) + ", " + words(WINDOWS, l.window));
          cell(tr, l.subject ? l.scope + " " + l.subject : "this tenant");
          cell(tr, money(l.used), "num" + (share >= 1 ? " bad" : share >= 0.8 ? " warn" : ""));
          cell(tr, money(l.amount), "num");
          cell(tr, money(l.remaining), "num");
          table.appendChild(tr);
        }
        labelCells(table);
      }
    } catch (e) {
      showError(e);
    }
  }

  $("limits-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const of = state.limitsOf;
    if (!of) return;
    const limits = [...$("limits-rows").querySelectorAll("tr.limit-row")].map(limitOf);
    act(async () => {
      await api("PUT", limitsPath(of.kind, of.id, of.keyId), { limits });
      await openLimits(of.kind, of.id, of.keyId);
    }, "limits-form-error");
  });

  // The editor: a row a limit, every field of one with its words and unit.
  const SCOPES = [["tenant", "the tenant"], ["key", "each API key"], ["user", "each end user"], ["bot", "each bot"], ["model", "each model"]];
  const MEASURES = [["calls", "calls"], ["tokens", "tokens"], ["spendUsd", "spend (USD)"], ["inFlight", "requests in flight"]];
  const WINDOWS = [["burst", "per N seconds (burst)"], ["minute", "a minute"], ["hour", "an hour"], ["day", "a day (UTC)"],
    ["month", "a calendar month"], ["billingMonth", "a billing month"], ["none", "at once"]];
  const UNITS = { calls: "calls", tokens: "tokens", spendUsd: "USD", inFlight: "requests" };

  const words = (list, v) => (list.find(([k]) => k === v) || [v, v])[1];

  function limitRows(limits, kind) {
    const table = $("limits-rows");
    head(table, [["Name"], ["Counts for"], ["Measure"], ["Window"], ["Amount"], ["Per seconds"], ["Burst"], [""]]);
    table.dataset.kind = kind;
    limits.forEach((l) => addLimitRow(l));
    $("limits-none").hidden = limits.length > 0;
  }

  function addLimitRow(l) {
    const table = $("limits-rows");
    const kind = table.dataset.kind;
    const n = table.querySelectorAll("tr.limit-row").length + 1;
    const tr = document.createElement("tr");
    tr.className = "limit-row";
    const input = (field, value, label, attrs) => {
      const e = document.createElement("input");
      e.dataset.field = field;
      e.setAttribute("aria-label", label + " of limit " + n);
      for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
      e.value = value === null || value === undefined ? "" : String(value);
      return e;
    };
    const select = (field, options, value, label) => {
      const e = document.createElement("select");
      e.dataset.field = field;
      e.setAttribute("aria-label", label + " of limit " + n);
      for (const [v, words] of options) e.appendChild(new Option(words, v));
      e.value = value;
      return e;
    };
    const scopes = kind === "key" ? SCOPES.filter(([v]) => v === "key") : SCOPES;
    cell(tr, input("name", l.name, "Name", { placeholder: "daily-spend", required: "" }));
    cell(tr, select("scope", scopes, l.scope || scopes[0][0], "Counts for"));
    cell(tr, select("measure", MEASURES, l.measure || "calls", "Measure"));
    cell(tr, select("window", WINDOWS, l.window || "day", "Window"));
    const amount = document.createElement("span");
    amount.className = "with-unit";
    const unit = document.createElement("span");
    unit.className = "unit muted";
    unit.dataset.field = "unit";
    amount.append(input("amount", l.amount, "Amount", { type: "number", min: "0", step: "any", placeholder: "unlimited" }), unit);
    cell(tr, amount);
    cell(tr, input("perSeconds", l.perSeconds, "Per seconds", { type: "number", min: "1", step: "1", placeholder: "1" }));
    cell(tr, input("burst", l.burst, "Burst", { type: "number", min: "1", step: "1", placeholder: "at once" }));
    cell(tr, button("Remove", null, () => {
      tr.remove();
      $("limits-none").hidden = table.querySelectorAll("tr.limit-row").length > 0;
    }, "ghost small-button danger"));
    // The unit follows the measure; seconds and burst only for a burst.
    const sync = () => {
      const v = (f) => tr.querySelector("[data-field=" + f + "]");
      v("unit").textContent = UNITS[v("measure").value] || "";
      const burst = v("window").value === "burst";
      for (const f of ["perSeconds", "burst"]) {
        v(f).disabled = !burst;
        v(f).required = burst;
        if (!burst) v(f).value = "";
      }
    };
    tr.addEventListener("change", sync);
    table.appendChild(tr);
    labelCells(table);
    sync();
    $("limits-none").hidden = true;
    return tr;
  }

  // A row as the API's limit.
  function limitOf(tr) {
    const v = (f) => tr.querySelector("[data-field=" + f + "]").value.trim();
    const l = { name: v("name"), scope: v("scope"), measure: v("measure"), window: v("window"), amount: v("amount") === "" ? null : Number(v("amount")) };
    // Seconds and burst belong to a burst window, and only when given.
    for (const f of l.window === "burst" ? ["perSeconds", "burst"] : []) {
      if (v(f) !== "") l[f] = Number(v(f));
    }
    return l;
  }

  $("limits-add").addEventListener("click", () => {
    const tr = addLimitRow({});
    tr.querySelector("[data-field=name]").focus();
  });

  $("limits-close").addEventListener("click", () => {
    state.limitsOf = null;
    $("limits-card").hidden = true;
  });

  // ---- forms -----------------------------------------------------------------

  // The plan being edited, as the API last showed it: a save sends only
  // the fields the operator changed (PATCH), so nothing else moves.
  let editing = null;

  // The form's fields: each one's input(s), how a plan shows in them, and
  // how they make the API's value.
  const numberOf = (id) => ($(id).value === "" ? null : Number($(id).value));
  const FIELDS = {
    name: { inputs: ["plan-name"], show: (p) => [p.name], value: () => $("plan-name").value || $("plan-id").value },
    monthlyCalls: { inputs: ["plan-calls"], show: (p) => [p.monthlyCalls], value: () => numberOf("plan-calls") },
    monthlyTokens: { inputs: ["plan-tokens"], show: (p) => [p.monthlyTokens], value: () => numberOf("plan-tokens") },
    rateLimit: {
      inputs: ["plan-rate", "plan-per", "plan-burst"],
      show: (p) => (p.rateLimit ? [p.rateLimit.requests, p.rateLimit.perSeconds, p.rateLimit.burst] : [null, null, null]),
      value: () => {
        const requests = numberOf("plan-rate");
        if (requests === null) return null;
        return { requests, perSeconds: numberOf("plan-per") ?? 1, burst: numberOf("plan-burst") ?? requests * 2 };
      },
    },
    ingestRate: {
      inputs: ["plan-ingest", "plan-ingest-per", "plan-ingest-burst"],
      show: (p) => (p.ingestRate ? [p.ingestRate.records, p.ingestRate.perSeconds, p.ingestRate.burst] : [null, null, null]),
      value: () => {
        const records = numberOf("plan-ingest");
        if (records === null) return null;
        return { records, perSeconds: numberOf("plan-ingest-per") ?? 1, burst: numberOf("plan-ingest-burst") ?? Math.max(records, 10000) };
      },
    },
    reserveTokens: { inputs: ["plan-reserve-tokens"], show: (p) => [p.reserveTokens], value: () => numberOf("plan-reserve-tokens") },
    reservationTtlSeconds: { inputs: ["plan-reservation-ttl"], show: (p) => [p.reservationTtlSeconds], value: () => numberOf("plan-reservation-ttl") },
    reserveUsd: { inputs: ["plan-reserve-usd"], show: (p) => [p.reserveUsd], value: () => numberOf("plan-reserve-usd") },
    priceUsdMonthly: { inputs: ["plan-price"], show: (p) => [p.priceUsdMonthly], value: () => numberOf("plan-price") ?? 0 },
  };
  const shown = (v) => (v === null || v === undefined ? "" : String(v));

  function editPlan(p) {
    editing = p;
    $("plan-form-title").textContent = "Edit plan " + p.id;
    $("plan-id").value = p.id;
    $("plan-id").disabled = true;
    for (const f of Object.values(FIELDS)) {
      f.show(p).forEach((v, i) => { $(f.inputs[i]).value = shown(v); });
    }
    $("plan-submit").textContent = "Save plan";
    $("plan-cancel").hidden = false;
    showError(null, "plan-form-error");
  }

  function resetPlanForm() {
    editing = null;
    $("plan-form").reset();
    $("plan-id").disabled = false;
    $("plan-form-title").textContent = "New plan";
    $("plan-submit").textContent = "Create plan";
    $("plan-cancel").hidden = true;
  }

  $("plan-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const was = editing;
    const body = {};
    for (const [name, f] of Object.entries(FIELDS)) {
      // Editing, a field goes only when one of its inputs changed.
      if (was && f.show(was).every((v, i) => shown(v) === $(f.inputs[i]).value)) continue;
      body[name] = f.value();
    }
    act(async () => {
      if (was) {
        if (Object.keys(body).length) await api("PATCH", "/api/admin/plans/" + encodeURIComponent(was.id), body);
      } else {
        await api("POST", "/api/admin/plans", Object.assign({ id: $("plan-id").value }, body));
      }
      resetPlanForm();
    }, "plan-form-error");
  });
  $("plan-cancel").addEventListener("click", resetPlanForm);

  $("tenant-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = { id: $("tenant-id").value, planId: $("tenant-plan").value };
    if ($("tenant-name").value) body.name = $("tenant-name").value;
    act(async () => {
      await api("POST", "/api/admin/tenants", body);
      $("tenant-form").reset();
    }, "tenant-form-error");
  });

  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = state.keysOf;
    const body = $("key-name").value ? { name: $("key-name").value } : {};
    act(async () => {
      const made = await api("POST", "/api/admin/tenants/" + encodeURIComponent(id) + "/keys", body);
      $("new-key-value").textContent = made.key;
      $("copy-said").textContent = "";
      $("new-key").hidden = false;
      $("key-form").reset();
    }, "key-form-error");
  });
  // The key is shown once: a button copies it.
  $("copy-key").addEventListener("click", async () => {
    const key = $("new-key-value").textContent;
    try {
      await navigator.clipboard.writeText(key);
      $("copy-said").textContent = "Copied.";
    } catch (_) {
      // No clipboard (an insecure origin): the key is selected to copy by hand.
      const range = document.createRange();
      range.selectNodeContents($("new-key-value"));
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      $("copy-said").textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  });
  $("tenant-search").addEventListener("input", (ev) => {
    state.search = ev.target.value;
    state.page = 0;
    renderTenants();
  });
  $("page-prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); renderTenants(); });
  $("page-next").addEventListener("click", () => { state.page += 1; renderTenants(); });
  $("refresh").addEventListener("click", () => load());
  $("keys-close").addEventListener("click", () => { state.keysOf = null; $("keys-card").hidden = true; $("new-key").hidden = true; });

  // ---- sign-in ---------------------------------------------------------------

  function showLogin(message) {
    clearInterval(state.timer);
    $("console").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
  }

  async function signIn(token) {
    clearInterval(state.timer);
    const attempt = ++state.attempt;
    if (isTenantKey(token)) return showLogin("That is a tenant key: the console needs the admin token.");
    state.token = token;
    try {
      await api("GET", "/api/admin/plans");
    } catch (e) {
      if (attempt !== state.attempt) return;
      if (e.status === 401 || e.status === 403) {
        kept.forget(token);
        state.token = null;
        return showLogin("That token was not accepted: the console needs the admin token.");
      }
      return showLogin("Tollgate could not be reached (" + e.message + "). Try again.");
    }
    if (attempt !== state.attempt) return;
    kept.keep(token);
    $("login").hidden = true;
    $("console").hidden = false;
    $("signout").hidden = false;
    await load();
    // The figures move with the traffic; the lists with other operators.
    clearInterval(state.timer);
    state.timer = setInterval(() => { if (!document.hidden && state.token) load(); }, REFRESH_MS);
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token-input").value.trim();
    if (t) signIn(t);
  });
  // Signing out forgets the token (kept in this tab only) and stops the
  // refresh.
  $("signout").addEventListener("click", () => {
    kept.forget(state.token || "");
    state.token = null;
    state.attempt++;
    $("switch").hidden = true;
    showLogin(null);
  });

  // A token from the link's fragment signs in at once when none is in use
  // (or the same one); one that would replace another is asked about.
  function fromLink(token) {
    const now = state.token;
    if (!now || now === token) return signIn(token);
    askToSwitch(token, now, () => signIn(token));
  }
  window.addEventListener("hashchange", () => {
    const t = keyFromHash();
    if (t) fromLink(t);
  });
  const link = keyFromHash();
  const stored = kept.admin();
  if (stored) signIn(stored);
  else if (!link) showLogin(null);
  if (link) fromLink(link);
})();
