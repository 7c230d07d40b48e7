// Tollgate dashboard: plain JS, no dependencies, charts drawn as SVG.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const { nf, num, usd, request, keyFromHash, isTenantKey, kept, askToSwitch } = window.Tollgate;
  const REFRESH_MS = 5000;
  // Which view this tab showed last, "admin" or "tenant".
  const VIEW = "tollgate.view";
  const state = { key: null, pending: null, mode: null, range: "week", from: null, to: null, tenant: null, timer: null, busy: null, hover: null, attempt: 0 };

  // The range as a query: a named one, or `from`/`to` (a previous period,
  // or dates the user picked).
  function rangeQuery() {
    if (state.range !== "custom") return "range=" + state.range;
    return "from=" + encodeURIComponent(state.from.toISOString()) + "&to=" + encodeURIComponent(state.to.toISOString());
  }

  // A tenant's report, of one API key when one is picked.
  function reportQuery() {
    return rangeQuery() + (state.keyId ? "&keyId=" + encodeURIComponent(state.keyId) : "");
  }

  const compact = (n) => {
    if (n === null || n === undefined) return "—";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1).replace(/\.0$/, "") + "B";
    if (a >= 1e6) return (n / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    return nf.format(Math.round(n));
  };
  // A rate to two significant digits (whole numbers from 100 up).
  const rate = (n) => (n === null || n === undefined ? "—" : n >= 100 ? nf.format(Math.round(n))
    : n === 0 ? "0" : nf.format(Number(n.toPrecision(2))));
  // A time of day as the rest of the page gives it: 24-hour, UTC.
  const utcTime = (d) => d.toISOString().slice(11, 19) + " UTC";
  const ms = (n) => (n === null || n === undefined ? "—" : n >= 1000 ? (n / 1000).toFixed(2) + " s" : Math.round(n) + " ms");
  const day = (iso) => (iso ? new Date(iso).toLocaleDateString("en-US", { month: "short", day: "numeric", year: "numeric", timeZone: "UTC" }) : "—");

  // The range in words, as the cost beside it reads: "in the last 7 days".
  function rangeWords(range) {
    if (state.range === "day") return "in the last 24 hours";
    if (state.range === "week") return "in the last 7 days";
    if (state.range === "month") return "this billing period";
    const from = new Date(range.from), to = new Date(range.to);
    const whole = from.getUTCDate() === 1 && to.getUTCDate() === 1 && from.getUTCHours() === 0 && to.getUTCHours() === 0 &&
      (to.getUTCMonth() - from.getUTCMonth() + 12) % 12 === 1;
    if (whole) return "in " + from.toLocaleDateString("en-US", { month: "long", year: "numeric", timeZone: "UTC" });
    // The end is exclusive: the range's last day is the one before it.
    const last = new Date(to.getTime() - 1);
    return dateOf(from) === dateOf(last) ? "on " + day(range.from) : "from " + dateOf(from) + " to " + day(last.toISOString());
  }

  function text(id, value) {
    const el = $(id);
    if (el && el.textContent !== value) el.textContent = value;
  }

  // Every read of one refresh goes with the key it started with: a
  // sign-in meanwhile (state.key changes) makes its answers, and its
  // failures, stale rather than sent under the wrong key.
  const reader = (key) => (path) => request(key, "GET", path);

  // ---- sign-in ---------------------------------------------------------------

  function showLogin(message) {
    clearInterval(state.timer);
    state.mode = null;
    $("app").hidden = true;
    $("login").hidden = false;
    $("signout").hidden = true;
    text("who", "");
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
  }

  async function signIn(key) {
    // Until the new key is accepted nothing refreshes: no timer, no
    // resize and no answer still in flight may use it, or the old key,
    // and report the wrong failure (mode is null, refresh does nothing).
    clearInterval(state.timer);
    state.mode = null;
    state.key = null;
    state.keyId = null;
    state.keysSeen = new Map();
    state.pending = key;
    const attempt = ++state.attempt;
    const tenantShaped = isTenantKey(key);
    try {
      await request(key, "GET", tenantShaped ? "/api/billing/usage" : "/api/admin/tenants");
      if (attempt !== state.attempt) return;
      state.key = key;
      state.pending = null;
      state.mode = tenantShaped ? "tenant" : "admin";
    } catch (e) {
      if (attempt !== state.attempt) return;
      state.pending = null;
      if (e.status === 401 || e.status === 403) {
        kept.forget(key);
        return showLogin("That key was not accepted: it is unknown, revoked or mistyped.");
      }
      return showLogin("Tollgate could not be reached (" + e.message + "). Try again.");
    }
    kept.keep(key);
    sessionStorage.setItem(VIEW, state.mode);
    $("login").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = false;
    $("admin-bar").hidden = state.mode !== "admin";
    $("admin-top").hidden = state.mode !== "admin";
    text("who", state.mode === "admin" ? "Operator" : "Key " + key.slice(0, 8) + "…");
    if (state.mode === "tenant") {
      reader(key)("/api/billing/subscription").then((sub) => {
        text("who", sub.tenantName + " · key " + key.slice(0, 8) + "…");
        text("tenant-name", sub.tenantName);
        periods(new Date(sub.tenantCreatedAt));
      }).catch(() => {});
    }
    await refresh();
    clearInterval(state.timer);
    state.timer = setInterval(refresh, REFRESH_MS);
  }

  // ---- data ------------------------------------------------------------------

  async function refresh() {
    // One refresh at a time per key; one for a key signed in meanwhile
    // goes ahead, and the old one draws nothing.
    if (!state.key || state.busy === state.key) return;
    const key = state.key;
    state.busy = key;
    const api = reader(key);
    const stale = () => key !== state.key;
    try {
      if (state.mode === "admin") {
        // Every tenant's unusual hours come with the rest, so that the
        // list is drawn once, never the fleet's unnamed list first.
        const [all, tenants, across] = await Promise.all([
          api("/api/admin/api-usage?" + rangeQuery()),
          api("/api/admin/tenants"),
          state.tenant ? null : api("/api/admin/anomalies?" + rangeQuery()),
        ]);
        if (stale()) return;
        renderAdmin(all, tenants.data);
        if (state.tenant) {
          const base = "/api/admin/tenants/" + encodeURIComponent(state.tenant);
          const [usage, report] = await Promise.all([api(base + "/usage"), api(base + "/api-usage?" + reportQuery())]);
          const period = state.range === "month" ? report : await api(base + "/api-usage?range=month");
          if (stale()) return;
          draw(() => renderTenant(usage, report, period), report);
        } else {
          draw(() => {
            renderTenant(null, all);
            // Every tenant's unusual hours, not only all together.
            renderAnomalies(across.anomalies.slice().reverse(), all.summary.totalRequests);
          }, all);
        }
      } else if (state.mode === "tenant") {
        const [usage, report] = await Promise.all([api("/api/billing/usage"), api("/api/billing/api-usage?" + reportQuery())]);
        const period = state.range === "month" ? report : await api("/api/billing/api-usage?range=month");
        if (stale()) return;
        draw(() => renderTenant(usage, report, period), report);
      }
      state.shownAt = new Date();
      text("updated", utcTime(state.shownAt));
      $("offline").hidden = true;
    } catch (e) {
      if (stale()) return;
      if (e.status === 401) showLogin("That key is no longer accepted.");
      else {
        // Out of reach (or failing): a banner says so, and how old the
        // figures below are, until a refresh succeeds.
        const since = state.shownAt ? "The figures below are from " + utcTime(state.shownAt) + "." : "No figures yet.";
        text("offline", "Tollgate cannot be reached (" + e.message + "). " + since + " Retrying every 5 s.");
        $("offline").hidden = false;
        text("updated", "failed, retrying");
      }
    } finally {
      if (state.busy === key) state.busy = null;
    }
  }

  // ---- rendering ---------------------------------------------------------------

  // Draws a refresh's answers, and keeps how, to draw them again when a
  // tab is shown; `report` is the range's (the Custom button starts from
  // its dates).
  function draw(render, report) {
    state.redraw = render;
    state.shown = report;
    render();
  }

  // `usage` is null for the all-tenants view: no quota, users, bots or forecast.
  // `period` is the current period's report (cost so far), when known.
  function renderTenant(usage, report, period) {
    for (const id of ["quota-card", "tokens-card", "users-card", "bots-card", "forecast-card"]) $(id).hidden = !usage;
    // Nothing recorded yet, this period or in the range: the page says how
    // to send the first record instead of drawing empty charts.
    state.idle = report.summary.totalRequests === 0 && (!usage || usage.calls.used === 0) &&
      (!period || period.summary.totalRequests === 0);
    renderFirstRequest(usage && state.idle);
    // A tenant exports its own records; the operator, the chosen tenant's.
    $("export").hidden = !(state.mode === "tenant" || (state.mode === "admin" && state.tenant));
    renderReport(report);
    if (!usage) return;
    renderQuota(usage);
    renderTokens(usage, period ? period.summary.estimatedCostUsd : null);
    table("users", ["User", "Requests", "Tokens", "Cost"], report.topUsers, (r) => [[r.userId, "path"], num(r.requests), compact(r.tokens), usd(r.costUsd)]);
    table("bots", ["Bot", "Requests", "Tokens", "Cost"], report.topBots, (r) => [[r.botId, "path"], num(r.requests), compact(r.tokens), usd(r.costUsd)]);
    // Usage by the API key that made it, by name where the key has one.
    const keys = report.topKeys || [];
    table("keys", ["Key", "Requests", "Tokens", "Cost"], keys,
      (r) => [[r.name ? r.name + " (" + r.keyId + ")" : r.keyId, "path"], num(r.requests), compact(r.tokens), usd(r.costUsd)]);
    keyPicker(keys);
    renderForecast(report.forecast, report.recommendation, usage);
    renderLimits(usage.limits || []);
  }

  function renderFirstRequest(show) {
    $("first-request").hidden = !show;
    if (!show) return;
    text("first-request-code",
      "export TOLLGATE_KEY=tg_…   # " + (state.mode === "tenant" ? "your" : "a") + " tenant API key\n" +
      "curl -X POST " + location.origin + "/api/v1/usage \\\n" +
      "  -H \"Authorization: Bearer $TOLLGATE_KEY\" -H \"Content-Type: application/json\" \\\n" +
      "  -d '{\"endpoint\": \"/v1/chat\", \"method\": \"POST\", \"statusCode\": 200, \"model\": \"gpt-4o\", \"promptTokens\": 120, \"completionTokens\": 40}'");
  }

  // The keys seen in this tenant's reports, to show one key's usage alone
  // (the whole report, its charts and tables, filtered by it).
  function keyPicker(keys) {
    const picker = $("key-picker");
    state.keysSeen = state.keysSeen || new Map();
    for (const k of keys) state.keysSeen.set(k.keyId, k.name ? k.name + " (" + k.keyId + ")" : k.keyId);
    const want = [""].concat([...state.keysSeen.keys()]);
    const have = [...picker.options].map((o) => o.value);
    if (want.join("\n") !== have.join("\n")) {
      picker.innerHTML = "";
      for (const id of want) {
        const o = document.createElement("option");
        o.value = id;
        o.textContent = id ? state.keysSeen.get(id) : "every key";
        picker.appendChild(o);
      }
    }
    picker.value = state.keyId || "";
  }

  // Every limit (SPEC §12) with its use: the plan's own, the tenant's,
  // and each tracked key, end user, bot and model against its own.
  function renderLimits(limits) {
    $("limits-card").hidden = limits.length === 0;
    const amount = (l, v) => (l.measure === "spendUsd" ? usd(v) : num(v));
    const measures = { calls: "calls", tokens: "tokens", spendUsd: "spend", inFlight: "requests in flight" };
    const windows = { burst: "burst", minute: "a minute", hour: "an hour", day: "a day", month: "a month", billingMonth: "a billing month", none: "at once" };
    table("limits", ["Limit", "For", "Used", "Of", "Left", "Resets"], limits, (l) => [
      [l.name + " · " + (measures[l.measure] || l.measure) + " " + (windows[l.window] || l.window), "path"],
      l.subject ? l.scope + " " + l.subject : "this tenant",
      amount(l, l.used),
      amount(l, l.amount),
      amount(l, l.remaining),
      !l.resetAt ? "—" : ["burst", "minute", "hour"].includes(l.window) ? l.resetAt.slice(11, 16) + " UTC" : day(l.resetAt),
    ]);
  }

  // One quota bar (calls or tokens): used, of limit, percent, remaining.
  function renderBar(prefix, card, q, unit) {
    text(prefix + "-used", unit === "tokens" ? compact(q.used) : num(q.used));
    card.dataset.limit = q.limit === null ? "none" : String(q.limit);
    card.classList.toggle("unlimited", q.limit === null);
    // Without a limit the figure stands alone: "78,202 · no monthly limit".
    text(prefix + "-of", q.limit === null ? "· " : "of ");
    if (q.limit === null) {
      text(prefix + "-limit", "no monthly limit");
      text(prefix + "-percent", "");
      card.classList.remove("warn", "over");
      return null;
    }
    const pct = q.percent;
    text(prefix + "-limit", unit === "tokens" ? compact(q.limit) : num(q.limit));
    text(prefix + "-percent", pct.toFixed(1) + "%");
    card.classList.toggle("over", pct >= 100);
    card.classList.toggle("warn", pct >= 80 && pct < 100);
    $(prefix + "-fill").style.width = Math.min(pct, 100) + "%";
    $(prefix + "-bar").setAttribute("aria-valuenow", String(Math.round(Math.min(pct, 100))));
    return pct;
  }

  function renderTokens(usage, costSoFar) {
    const t = usage.tokens;
    const pct = renderBar("tokens", $("tokens-card"), t, "tokens");
    text("tokens-remaining", pct === null ? "Tokens are not limited on this plan" : compact(t.remaining) + " tokens remaining · resets " + day(usage.resetAt));
    text("period-cost", costSoFar === null ? "" : usd(costSoFar) + " so far this period");
  }

  function renderQuota(usage) {
    text("plan-name", usage.plan.name);
    text("reset-at", day(usage.resetAt));
    const pct = renderBar("calls", $("quota-card"), usage.calls, "calls");
    text("calls-remaining", pct === null ? "Calls are not limited on this plan" : num(usage.calls.remaining) + " remaining");
    $("calls-reset").hidden = pct === null;
  }

  function renderReport(report) {
    const s = report.summary;
    state.anomalies = report.anomalies || [];
    text("total-requests", num(s.totalRequests));
    text("rpm", rate(s.requestsPerMinute) + " a minute");
    text("success-rate", s.successRate === null ? "—" : s.successRate.toFixed(1) + "%");
    text("failed", num(s.failedRequests) + " failed · " + num(s.rejectedRequests) + " rejected");
    text("total-tokens", compact(s.totalTokens));
    const kinds = s.tokensByKind || {};
    const cached = s.cacheHitRate ? " (" + pct1(s.cacheHitRate) + " cached)" : "";
    const reasoning = kinds.reasoning ? " (" + compact(kinds.reasoning) + " reasoning)" : "";
    text("token-split", compact(s.promptTokens) + " prompt" + cached + " · " + compact(s.completionTokens) + " completion" + reasoning);
    text("avg-latency", ms(s.avgResponseTimeMs));
    text("p95-latency", "p95 " + ms(s.p95ResponseTimeMs) + " · p99 " + ms(s.p99ResponseTimeMs));
    text("cost", usd(s.estimatedCostUsd));
    text("cost-note", rangeWords(report.range));
    // Where the cost went, by token kind (the kinds that cost anything).
    const by = s.costByKind || {};
    const parts = [["input", by.uncachedPrompt], ["cached input", by.cachedPrompt], ["cache writes", by.cacheWrite],
      ["output", by.completion], ["unsplit", by.unsplit]].filter(([, v]) => v > 0);
    text("cost-split", parts.length > 1 ? parts.map(([k, v]) => usd(v) + " " + k).join(" · ") : "");
    drawChart(report.series, report.range);
    table("endpoints", ["Endpoint", "Requests", "Errors", "Avg", "p95", "Tokens"], report.endpoints,
      (r) => [[r.method + " " + r.endpoint, "path"], num(r.requests), num(r.errors), ms(r.avgResponseTimeMs), ms(r.p95ResponseTimeMs), compact(r.tokens)]);
    table("statuses", ["Status", "Requests", "Share"], report.statusCodes,
      (r) => [String(r.status), num(r.count), s.totalRequests ? (100 * r.count / s.totalRequests).toFixed(1) + "%" : "—"]);
    // A model without a price stays listed, marked: its tokens cost 0
    // until the price table has it.
    // Under the spend: the costliest model first.
    const byCost = report.models.slice().sort((a, b) => b.costUsd - a.costUsd || b.requests - a.requests);
    table("models", ["Model", "Requests", "Prompt", "Cached", "Completion", "Cost"], byCost,
      (r) => [r.priced === false ? r.model + " (no price)" : r.model, num(r.requests), compact(r.promptTokens),
        r.cacheHitRate ? pct1(r.cacheHitRate) : "—", compact(r.completionTokens), usd(r.costUsd)]);
    drawHours(report.peakHours);
    drawCost(report.costByModel);
    renderAnomalies(report.anomalies || [], s.totalRequests);
    renderInsights(report.insights || []);
    const breakdown = (card, id, key, rows, extra) => {
      $(card).hidden = !rows || rows.length === 0;
      if ($(card).hidden) return;
      table(id, [key[1], "Requests", "Errors", "Tokens", "Cost"].concat(extra ? ["p95"] : []), rows,
        (r) => [[r[key[0]], "path"], num(r.requests), num(r.errors), compact(r.tokens), usd(r.costUsd)].concat(extra ? [ms(r.p95ResponseTimeMs)] : []));
    };
    breakdown("versions-card", "versions", ["apiVersion", "Version"], report.apiVersions, false);
    breakdown("countries-card", "countries", ["country", "Country"], report.countries, false);
    breakdown("integrations-card", "integrations", ["integration", "Integration"], report.integrations, true);
    // Versions and countries share a row; alone, one takes the whole row.
    const [v, c] = [$("versions-card"), $("countries-card")];
    v.classList.toggle("wide", c.hidden);
    c.classList.toggle("wide", v.hidden);
  }

  const METRIC = {
    requests: ["Requests", (v) => num(Math.round(v))],
    tokens: ["Tokens", (v) => compact(v)],
    errorRate: ["Error rate", (v) => (v * 100).toFixed(1) + "%"],
    p95LatencyMs: ["p95 latency", (v) => ms(v)],
  };

  // An anomaly in words: "Requests ↑ 300 (usual 60)".
  function anomalyText(a) {
    const [name, fmt] = METRIC[a.metric] || [a.metric, String];
    return name + " " + (a.direction === "up" ? "↑" : "↓") + " " + fmt(a.observed) + " (usual " + fmt(a.expected) + ")";
  }

  // The unusual hours, newest first, one row per hour.
  // `requests`: the range's, so that an empty range says it has no
  // traffic rather than that its traffic was usual.
  function renderAnomalies(list, requests) {
    const box = $("anomalies");
    box.dataset.count = String(list.length);
    if (list.length === 0) {
      box.innerHTML = requests === 0 ? '<li class="empty">No traffic in this range yet.</li>' : '<li class="empty">Nothing unusual in this range.</li>';
      return;
    }
    const hours = [];
    for (const a of list.slice().reverse()) {
      const last = hours[hours.length - 1];
      if (last && last.t === a.t) last.items.push(a);
      else hours.push({ t: a.t, items: [a] });
    }
    const rows = hours.slice(0, 6).map((h) => {
      const li = document.createElement("li");
      li.className = "anomaly";
      const when = document.createElement("div");
      when.className = "when";
      when.textContent = label(h.t, "hour") + " UTC";
      li.append(when);
      for (const a of h.items) {
        const what = document.createElement("div");
        what.className = "what " + a.direction;
        what.dataset.metric = a.metric;
        what.title = "score " + a.score;
        // The operator's list names whose hour it was.
        const who = "tenantId" in a ? (a.tenantId === null ? "All tenants: " : a.tenantId + ": ") : "";
        what.textContent = who + anomalyText(a);
        li.append(what);
      }
      return li;
    });
    if (hours.length > 6) {
      const more = document.createElement("li");
      more.className = "muted small";
      more.textContent = "and " + num(hours.length - 6) + " more hours";
      rows.push(more);
    }
    box.replaceChildren(...rows);
  }

  // Cost advice: what it would save a month, then how the figure was made.
  // Advice comes from the last 30 days; with no usage there is nothing
  // to judge, and the page says so rather than praising it.
  function renderInsights(list) {
    const box = $("insights");
    box.dataset.count = String(list.length);
    if (list.length === 0) {
      box.innerHTML = state.idle
        ? '<p class="empty">Advice appears once there is usage to learn from.</p>'
        : '<p class="empty">No savings found in the models, prompts, failures and retries of the last 30 days.</p>';
      return;
    }
    box.replaceChildren(...list.map((i) => {
      const div = document.createElement("div");
      div.className = "insight";
      div.dataset.kind = i.kind;
      const head = document.createElement("div");
      head.className = "insight-head";
      const title = document.createElement("strong");
      title.textContent = i.title;
      const save = document.createElement("span");
      save.className = "badge save";
      save.textContent = "≈ " + usd(i.estimatedMonthlySavingsUsd) + " / month";
      head.append(title, save);
      const detail = document.createElement("p");
      detail.className = "muted small";
      detail.textContent = i.detail;
      div.append(head, detail);
      return div;
    }));
  }

  // Round money ticks: whole dollars from a step of $1 up, else cents
  // (a step of at least a cent, never a fraction of one).
  function moneyTicks(max) {
    let t = niceTicks(max, 4, 0.01);
    if (t.step < 1 && !Number.isInteger(Math.round(t.step * 1e6) / 1e4)) t = { step: t.step * 2, top: 0, count: 0 };
    const step = Math.max(0.01, t.step);
    const count = Math.max(1, Math.ceil(max / step - 1e-9));
    const decimals = Number.isInteger(step) ? 0 : 2;
    const f = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: decimals, maximumFractionDigits: decimals });
    return { step, top: step * count, count, fmt: (v) => f.format(v) };
  }

  // The range's spend as stacked bars, a day (or an hour) each, one colour
  // a model; the legend beside it gives each model's total and share.
  function drawCost(c) {
    const box = $("cost-chart");
    const points = (c && c.points) || [];
    const models = (c && c.models) || [];
    box.dataset.points = String(points.length);
    box.dataset.bucket = c ? c.bucket : "";
    drawModelCosts(models, points, c ? c.bucket : "day");
    const max = Math.max(0, ...points.map((p) => p.costUsd));
    if (max === 0) {
      box.innerHTML = '<div class="empty">' + (state.idle ? "Spend appears here once there is usage." : "No spend in this range.") + "</div>";
      box.dataset.xticks = "";
      return;
    }
    const W = Math.max(300, Math.round(box.clientWidth || 900)), H = W < 600 ? 190 : 220, L = 64, R = 8, T = 10, B = 24;
    const bucket = c.bucket;
    const svg = node("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Spend per " + bucket + " by model" });
    const ticks = moneyTicks(max);
    const iw = W - L - R, ih = H - T - B, step = iw / points.length;
    leftAxis(svg, box, ticks, ticks.fmt, { L, R, W, T, ih }, null, (v) => v.toFixed(2));
    let partials = 0;
    points.forEach((p, i) => {
      let y = T + ih;
      const g = node("g", { class: p.partial ? "cost-bar partial" : "cost-bar" }, svg);
      if (p.partial) { g.dataset.partial = "true"; partials++; }
      p.byModel.forEach((v, m) => {
        if (v <= 0) return;
        const h = (v / ticks.top) * ih;
        y -= h;
        node("rect", { x: L + i * step + step * 0.12, y, width: Math.max(1, step * 0.76), height: h, class: "seg " + colour(models, m) }, g);
      });
      node("title", {}, g).textContent = label(p.t, bucket) + (bucket === "day" ? "" : " UTC") + (p.partial ? " (partial)" : "") + ": " + usd(p.costUsd) +
        p.byModel.map((v, m) => (v > 0 ? "\n" + models[m] + " " + usd(v) : "")).join("");
    });
    box.dataset.partials = String(partials);
    timeAxis(svg, points, bucket, L, step, iw, H - 6, "cost-chart");
    box.replaceChildren(svg);
  }

  // A model's colour class: one of six by its place, grey for "other".
  const colour = (models, m) => (models[m] === "other" ? "mo" : "m" + m);

  // The legend of the spend chart: each model's colour, total and share.
  function drawModelCosts(models, points, bucket) {
    const box = $("model-costs");
    const totals = models.map((_, m) => points.reduce((a, p) => a + (p.byModel[m] || 0), 0));
    const all = totals.reduce((a, v) => a + v, 0);
    if (all === 0) {
      box.replaceChildren();
      return;
    }
    const partial = points.some((p) => p.partial);
    box.replaceChildren(...models.map((name, m) => {
      const li = document.createElement("li");
      li.className = "model-cost";
      li.dataset.model = name;
      const key = document.createElement("span");
      key.className = "swatch " + colour(models, m);
      key.setAttribute("aria-hidden", "true");
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const value = document.createElement("span");
      value.className = "n";
      value.textContent = usd(totals[m]) + " · " + Math.round((100 * totals[m]) / all) + "%";
      li.append(key, label, value);
      return li;
    }), ...(partial ? [partialKey(bucket)] : []));
  }

  // The legend's line for the pale bars: buckets the range covers in part.
  function partialKey(bucket) {
    const li = document.createElement("li");
    li.className = "model-cost partial-key";
    const key = document.createElement("span");
    key.className = "swatch m0 pale";
    key.setAttribute("aria-hidden", "true");
    const label = document.createElement("span");
    label.className = "name muted";
    label.textContent = "Pale: a partial " + bucket;
    li.append(key, label);
    return li;
  }

  function renderForecast(f, rec, usage) {
    if (!f) return;
    if (usage.calls.used === 0 && f.projectedTokens === 0) {
      text("forecast-text", "No usage yet this period.");
      $("suggestion").hidden = true;
      return;
    }
    let line = "At this month's pace (" + num(Math.round(f.dailyCalls)) + " calls a day), the period ends near " +
      num(f.projectedCalls) + " calls, " + compact(f.projectedTokens) + " tokens and " + usd(f.projectedCostUsd) + ".";
    if (f.quotaExhaustedAt) {
      line += usage.calls.used >= usage.calls.limit
        ? " The call quota is used up."
        : " The call quota runs out around " + day(f.quotaExhaustedAt) + ".";
    } else if (usage.calls.limit !== null) {
      line += " The call quota will last.";
    }
    text("forecast-text", line);
    drawForecast(usage.calls.used, f.projectedCalls, usage.calls.limit);
    $("quota-key").hidden = usage.calls.limit === null;
    const sug = $("suggestion");
    sug.hidden = !rec;
    if (rec) sug.textContent = "Suggested plan: " + rec.planName + " ($" + rec.priceUsdMonthly.toFixed(2) + "/month). " + rec.reason;
  }

  // The period at a glance: calls used so far, where this pace ends, and
  // the quota (a line), on one scale.
  function drawForecast(used, projected, limit) {
    const box = $("forecast-chart");
    const W = Math.max(300, Math.round(box.clientWidth || 600)), H = 58, L = 4, R = 4, T = 18, BAR = 16;
    const top = Math.max(used, projected, limit || 0, 1) * 1.08;
    const x = (v) => L + ((W - L - R) * v) / top;
    const svg = node("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Calls used, projected and the quota" });
    node("rect", { x: L, y: T, width: W - L - R, height: BAR, rx: 4, class: "gauge-track" }, svg);
    node("rect", { x: L, y: T, width: Math.max(0, x(projected) - L), height: BAR, rx: 4, class: "gauge-projected" }, svg);
    node("rect", { x: L, y: T, width: Math.max(0, x(used) - L), height: BAR, rx: 4, class: "gauge-used" + (limit !== null && used >= limit ? " over" : "") }, svg);
    node("text", { x: L, y: 12 }, svg).textContent = "used " + num(used);
    node("text", { x: Math.min(x(projected), W - R), y: H - 4, "text-anchor": "end" }, svg).textContent = "projected " + num(projected);
    if (limit !== null) {
      const at = x(limit);
      node("line", { x1: at, x2: at, y1: T - 4, y2: T + BAR + 4, class: "gauge-limit" }, svg);
      // Beside the line, clear of the "used" label and of the right edge.
      const right = at > W - 110;
      node("text", { x: right ? at - 6 : Math.max(at + 6, L + 90), y: 12, "text-anchor": right ? "end" : "start", class: "gauge-limit-label" }, svg)
        .textContent = "quota " + num(limit);
    }
    box.dataset.projected = String(projected);
    box.replaceChildren(svg);
  }

  /** A share (0 to 1) as a percentage with one decimal. */
  function pct1(share) {
    return (share * 100).toFixed(1) + "%";
  }

  function table(id, heads, rows, cells) {
    const el = $(id);
    if (!rows || rows.length === 0) {
      el.innerHTML = "";
      const tr = el.insertRow();
      const td = tr.insertCell();
      td.className = "empty";
      td.textContent = "No data in this range yet";
      return;
    }
    const thead = document.createElement("thead");
    const hr = thead.insertRow();
    heads.forEach((h, i) => {
      const th = document.createElement("th");
      th.textContent = h;
      if (i > 0) th.className = "n";
      hr.appendChild(th);
    });
    const tbody = document.createElement("tbody");
    rows.forEach((r) => {
      const tr = tbody.insertRow();
      cells(r).forEach((c, i) => {
        const td = tr.insertCell();
        const [value, cls] = Array.isArray(c) ? c : [c, ""];
        td.textContent = value;
        td.title = value;
        td.className = (i > 0 ? "n " : "") + cls;
        // On a phone each row is a card of labelled lines (no column,
        // the cost included, is cut off).
        td.dataset.label = heads[i];
      });
    });
    el.replaceChildren(thead, tbody);
  }

  const SVG = "http://www.w3.org/2000/svg";
  function node(name, attrs, parent) {
    const n = document.createElementNS(SVG, name);
    for (const k in attrs) n.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(n);
    return n;
  }

  const dateOf = (t) => new Date(t).toLocaleDateString("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
  const timeOf = (t) => new Date(t).toISOString().slice(11, 16);

  // A bucket's name: its date, and for minutes and hours its time.
  function label(t, bucket) {
    return bucket === "day" ? dateOf(t) : dateOf(t) + " " + timeOf(t);
  }

  // The left axis of a chart: a grid line and a label at each of `ticks`
  // (from `niceTicks`), the labels as `fmt` writes them (of class `cls`);
  // the tick values, as `show` writes them, go in the box's data-ticks.
  function leftAxis(svg, box, ticks, fmt, { L, R, W, T, ih }, cls, show = String) {
    const at = [];
    for (let i = 0; i <= ticks.count; i++) {
      const y = T + ih - (ih * i) / ticks.count;
      node("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid-line" }, svg);
      const label = { x: L - 6, y: y + 4, "text-anchor": "end" };
      if (cls) label.class = cls;
      node("text", label, svg).textContent = fmt(ticks.step * i);
      at.push(show(ticks.step * i));
    }
    box.dataset.ticks = at.join(",");
  }

  // Round ticks: a step of 1, 2, 2.5 or 5 times a power of ten, enough of
  // them to reach `max`, taken as at least `least` (1 for counts, so an
  // axis of zeros still has a scale; 0 for money, whose steps go to cents).
  function niceTicks(max, want, least = 1) {
    const raw = Math.max(max, least) / want;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
    const count = Math.max(1, Math.ceil(max / step));
    return { step, top: step * count, count };
  }

  // One format for every tick of an axis: the unit of its top value, and
  // decimals only when the step needs them.
  function axisFormat(top, step) {
    const [div, suffix] = top >= 1e9 ? [1e9, "B"] : top >= 1e6 ? [1e6, "M"] : top >= 1e4 ? [1e3, "k"] : [1, ""];
    const unit = step / div;
    const decimals = Number.isInteger(unit) ? 0 : Number.isInteger(unit * 10) ? 1 : 2;
    return (v) => (v === 0 ? "0" : div === 1 && decimals === 0 ? nf.format(v) : (v / div).toFixed(decimals) + suffix);
  }

  const BUCKET_MS = { minute: 6e4, hour: 36e5, day: 864e5 };
  const DAY = 864e5;

  // The time axis: labels at round instants only - minutes a multiple of
  // 5, 10, 15 or 30, hours a multiple of 2, 3, 6 or 12, whole days, Mondays
  // - as many as fit, ten at most; a midnight within a range of hours is named by its
  // date, other ticks by the time. The tick times go in data-xticks.
  function timeAxis(svg, series, bucket, L, step, iw, y, testid) {
    const steps = bucket === "minute" ? [1, 2, 5, 10, 15, 30, 60, 120].map((m) => m * 6e4)
      : bucket === "hour" ? [1, 2, 3, 6, 12, 24, 48, 168].map((h) => h * 36e5)
      : [1, 2, 7, 14, 28].map((d) => d * DAY);
    const room = (ms) => Math.max(2, Math.min(10, Math.floor(iw / (ms >= DAY || bucket === "day" ? 64 : 52))));
    // Weeks start on Monday (1970-01-01 was a Thursday).
    const onStep = (t, ms) => (ms % (7 * DAY) === 0 ? (t / DAY + 3) % (ms / DAY) === 0 : t % ms === 0);
    const times = series.map((p) => new Date(p.t).getTime());
    // The finest step whose labels, counted in this series, fit.
    const every = steps.find((ms) => times.filter((t) => onStep(t, ms)).length <= room(ms)) || steps[steps.length - 1];
    const round = (t) => onStep(t, every);
    const at = [];
    series.forEach((p, i) => {
      const t = new Date(p.t).getTime();
      if (!round(t)) return;
      at.push(p.t);
      const name = bucket === "day" || t % DAY === 0 ? dateOf(t) : timeOf(t);
      node("text", { x: L + i * step + step / 2, y, "text-anchor": "middle" }, svg).textContent = name;
    });
    const box = document.querySelector("[data-testid=" + testid + "]");
    if (box) box.dataset.xticks = at.join(",");
  }

  function drawChart(series, range) {
    const bucket = range.bucket;
    const box = $("chart");
    box.dataset.range = state.range;
    box.dataset.points = String(series.length);
    const total = series.reduce((a, p) => a + p.requests, 0);
    if (total === 0) {
      box.innerHTML = '<div class="empty">No requests in this range yet</div>';
      return;
    }
    const W = Math.max(320, Math.round(box.clientWidth || 900)), H = W < 600 ? 230 : 270, L = 48, R = 52, T = 24, B = 26;
    const svg = node("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Requests and tokens per " + bucket });
    const req = niceTicks(Math.max(...series.map((p) => p.requests)), 4);
    const tok = niceTicks(Math.max(...series.map((p) => p.tokens)), 4);
    const fmtReq = axisFormat(req.top, req.step), fmtTok = axisFormat(tok.top, tok.step);
    const iw = W - L - R, ih = H - T - B, step = iw / series.length;
    leftAxis(svg, box, req, fmtReq, { L, R, W, T, ih }, "tick-req");
    for (let i = 0; i <= tok.count; i++) {
      const y = T + ih - (ih * i) / tok.count;
      node("text", { x: W - R + 6, y: y + 4, class: "tick-tok" }, svg).textContent = fmtTok(tok.step * i);
    }
    node("text", { x: 2, y: 12, class: "axis-title" }, svg).textContent = "requests / " + bucket;
    node("text", { x: W - 2, y: 12, "text-anchor": "end", class: "axis-title" }, svg).textContent = "tokens / " + bucket;
    // A bucket the range covers only in part - the first, which starts
    // before the range, and the last, still filling or cut by the range's
    // end - is drawn pale and said so in its title and the readout.
    const len = BUCKET_MS[bucket] || 36e5;
    const from = new Date(range.from).getTime(), to = Math.min(new Date(range.to).getTime(), Date.now());
    const isPartial = (p) => { const t = new Date(p.t).getTime(); return t < from || t + len > to; };
    series.forEach((p, i) => {
      const h = (p.requests / req.top) * ih;
      const partial = isPartial(p);
      const bar = node("rect", { x: L + i * step + step * 0.15, y: T + ih - h, width: Math.max(1, step * 0.7), height: h,
        class: partial ? "bar-req partial" : "bar-req", "data-requests": p.requests }, svg);
      if (partial) bar.dataset.partial = "true";
      node("title", {}, bar).textContent = label(p.t, bucket) + (partial ? " (partial)" : "") + ": " +
        num(p.requests) + " requests, " + num(p.tokens) + " tokens";
    });
    // Unusual hours: a mark above the bucket that holds them.
    const unusual = series.map((p) => {
      const start = new Date(p.t).getTime();
      return (state.anomalies || []).filter((a) => {
        const at = new Date(a.t).getTime();
        return at >= start && at < start + len;
      });
    });
    let marks = 0;
    unusual.forEach((list, i) => {
      if (list.length === 0) return;
      marks++;
      const h = (series[i].requests / req.top) * ih;
      const mark = node("circle", { cx: L + i * step + step / 2, cy: Math.max(T + 4, T + ih - h - 7), r: 4,
        class: "anomaly-mark " + list[0].direction }, svg);
      node("title", {}, mark).textContent = "Unusual: " + list.map(anomalyText).join(", ");
    });
    box.dataset.marks = String(marks);
    const pts = series.map((p, i) => (L + i * step + step / 2).toFixed(1) + "," + (T + ih - (p.tokens / tok.top) * ih).toFixed(1));
    node("polyline", { points: pts.join(" "), class: "line-tok" }, svg);
    timeAxis(svg, series, bucket, L, step, iw, H - 8, "chart");
    // The readout: a crosshair on one bucket and its figures, moved by the
    // pointer (mouse or touch) or the arrow keys; the latest by default.
    const cross = node("line", { x1: 0, x2: 0, y1: T, y2: T + ih, class: "crosshair" }, svg);
    const show = (i) => {
      i = Math.max(0, Math.min(series.length - 1, i));
      state.hover = i === series.length - 1 ? null : series[i].t;
      const p = series[i];
      const x = L + i * step + step / 2;
      cross.setAttribute("x1", x);
      cross.setAttribute("x2", x);
      box.dataset.selected = String(i);
      const partial = isPartial(p);
      const filling = new Date(p.t).getTime() + len > Date.now();
      text("readout", label(p.t, bucket) + (bucket === "day" ? "" : " UTC") + (filling ? " (in progress)" : partial ? " (partial)" : "") + " · " +
        num(p.requests) + " requests · " + num(p.tokens) + " tokens · " + num(p.errors) + " errors · " + usd(p.costUsd) +
        (unusual[i].length ? " · unusual: " + unusual[i].map(anomalyText).join(", ") : ""));
      return i;
    };
    let at = state.hover ? series.findIndex((p) => p.t === state.hover) : -1;
    at = show(at < 0 ? series.length - 1 : at);
    const overlay = node("rect", { x: L, y: T, width: iw, height: ih, fill: "transparent", class: "overlay" }, svg);
    const pick = (ev) => {
      const r = svg.getBoundingClientRect();
      const x = ((ev.clientX - r.left) / r.width) * W;
      at = show(Math.floor((x - L) / step));
    };
    overlay.addEventListener("pointermove", pick);
    overlay.addEventListener("pointerdown", pick);
    svg.setAttribute("tabindex", "0");
    svg.addEventListener("keydown", (ev) => {
      const moves = { ArrowLeft: at - 1, ArrowRight: at + 1, Home: 0, End: series.length - 1 };
      if (ev.key in moves) {
        ev.preventDefault();
        at = show(moves[ev.key]);
      }
    });
    box.replaceChildren(svg);
  }

  // Requests by hour of the day (UTC), on a round axis; the busiest hour
  // in its own colour (the legend says which).
  function drawHours(hours) {
    const box = $("hours");
    const max = Math.max(0, ...hours.map((h) => h.requests));
    if (max === 0) {
      box.innerHTML = '<div class="empty">No traffic in this range yet</div>';
      box.dataset.ticks = "";
      return;
    }
    const W = Math.max(300, Math.round(box.clientWidth || 480)), H = 170, L = 44, R = 4, T = 8, B = 22;
    const svg = node("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Requests by hour of day, UTC" });
    const y = niceTicks(max, 4);
    const fmt = axisFormat(y.top, y.step);
    const iw = W - L - R, ih = H - T - B, step = iw / 24;
    leftAxis(svg, box, y, fmt, { L, R, W, T, ih });
    hours.forEach((h) => {
      const bh = (h.requests / y.top) * ih;
      const peak = h.requests === max;
      const r = node("rect", { x: L + h.hour * step + 1.5, y: T + ih - bh, width: Math.max(1, step - 3), height: bh, rx: 2, class: peak ? "bar-hour peak" : "bar-hour" }, svg);
      node("title", {}, r).textContent = String(h.hour).padStart(2, "0") + ":00 UTC: " + num(h.requests) + " requests" + (peak ? " (busiest)" : "");
      if (h.hour % 3 === 0) node("text", { x: L + h.hour * step + step / 2, y: H - 6, "text-anchor": "middle" }, svg).textContent = String(h.hour).padStart(2, "0") + ":00";
    });
    box.replaceChildren(svg);
  }

  function renderAdmin(all, tenants) {
    const s = all.summary;
    text("admin-summary", num(all.tenants) + (all.tenants === 1 ? " tenant · " : " tenants · ") + num(s.totalRequests) + " requests · " +
      compact(s.totalTokens) + " tokens · " + usd(s.estimatedCostUsd) + " " + rangeWords(all.range));
    // The page's heading says whose usage it shows.
    const chosen = tenants.find((t) => t.id === state.tenant);
    text("tenant-name", chosen ? chosen.name : "All tenants");
    const born = chosen ? [chosen] : tenants;
    if (born.length) periods(new Date(Math.min(...born.map((t) => new Date(t.createdAt).getTime()))));
    const picker = $("tenant-picker");
    const ids = tenants.map((t) => t.id);
    if (picker.options.length !== ids.length + 1 || ids.some((id, i) => picker.options[i + 1].value !== id)) {
      const keep = state.tenant;
      picker.replaceChildren(new Option("Choose a tenant…", ""), ...tenants.map((t) => new Option(t.name + " (" + t.id + ")", t.id)));
      picker.value = ids.includes(keep) ? keep : "";
      state.tenant = picker.value || null;
    }
    table("top-tenants", ["Tenant", "Requests", "Tokens", "Cost"], all.topTenants.byRequests,
      (r) => [[r.tenantId, "path"], num(r.requests), compact(r.tokens), usd(r.costUsd)]);
  }

  // ---- wiring ------------------------------------------------------------------

  // The range shown, and which control says so: a named range's button,
  // "Custom" for dates picked (or being picked), the month picker for a
  // past month.
  function setRange(range, month) {
    state.range = range;
    state.hover = null;
    if (range !== "custom") $("custom-range").hidden = true;
    if (!month) $("period-picker").value = "";
    $("period-picker").classList.toggle("active", !!month);
    pressed(month ? null : range);
  }
  function pressed(range) {
    document.querySelectorAll(".switch button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.range === range)));
  }

  document.querySelectorAll(".switch button").forEach((b) =>
    b.addEventListener("click", () => {
      if (b.dataset.range === "custom") {
        // The dates of the range shown, to change; "Custom" is what is
        // pressed from now on, and Apply shows the dates.
        const shown = state.shown && state.shown.range;
        if (shown) {
          $("custom-from").value = shown.from.slice(0, 10);
          $("custom-to").value = new Date(new Date(shown.to).getTime() - 1).toISOString().slice(0, 10);
        }
        $("custom-range").hidden = false;
        $("period-picker").value = "";
        $("period-picker").classList.remove("active");
        pressed("custom");
        $("custom-from").focus();
        return;
      }
      setRange(b.dataset.range);
      refresh();
    }));

  // The tabs below the first screen: one panel shown at a time; its
  // charts are drawn when it is shown (a hidden box has no width).
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  function showTab(tab) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (state.redraw) state.redraw();
  }
  tabs.forEach((t, i) => {
    t.addEventListener("click", () => showTab(t));
    t.addEventListener("keydown", (e) => {
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (to === undefined) return;
      e.preventDefault();
      const next = tabs[(to + tabs.length) % tabs.length];
      next.focus();
      showTab(next);
    });
  });
  // The export needs the key in a header, so it is fetched and handed to
  // the browser as a file.
  $("export").addEventListener("click", async () => {
    try {
      const now = new Date();
      const from = state.range === "custom" ? state.from : state.range === "day" ? new Date(now - 864e5)
        : state.range === "week" ? new Date(now - 7 * 864e5) : new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
      const to = state.range === "custom" ? "&to=" + encodeURIComponent(state.to.toISOString()) : "";
      const base = state.mode === "admin"
        ? "/api/admin/tenants/" + encodeURIComponent(state.tenant) + "/api-usage/export"
        : "/api/billing/api-usage/export";
      const r = await fetch(base + "?format=csv&from=" + encodeURIComponent(from.toISOString()) + to, { headers: { Authorization: "Bearer " + state.key }, cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const blob = await r.blob();
      window.__tollgateExported = blob.size;
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = "tollgate-usage-" + (state.mode === "admin" ? state.tenant + "-" : "") + state.range + ".csv";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) {
      text("updated", "export failed (" + e.message + ")");
    }
  });
  // Previous billing periods (calendar months, UTC), the last twelve,
  // none from before `since` (when the tenant, or the first tenant, was
  // created): a month without the tenant has nothing to show.
  function periods(since) {
    const picker = $("period-picker");
    const now = new Date();
    const want = [];
    for (let i = 1; i <= 12; i++) {
      const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - i, 1));
      const end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - i + 1, 1));
      if (since && end <= since) break;
      want.push(start);
    }
    const have = [...picker.options].slice(1).map((o) => o.value);
    if (have.join() === want.map((d) => d.toISOString()).join()) return;
    const keep = picker.value;
    picker.replaceChildren(new Option(want.length ? "Earlier months…" : "No earlier months", ""),
      ...want.map((d) => new Option(d.toLocaleDateString("en-US", { month: "long", year: "numeric", timeZone: "UTC" }), d.toISOString())));
    picker.disabled = want.length === 0;
    picker.value = want.some((d) => d.toISOString() === keep) ? keep : "";
  }
  $("period-picker").addEventListener("change", (e) => {
    const v = e.target.value;
    if (!v) return;
    const start = new Date(v);
    state.from = start;
    state.to = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1));
    setRange("custom", true);
    refresh();
  });
  $("custom-apply").addEventListener("click", () => {
    const from = $("custom-from").value, to = $("custom-to").value;
    if (!from || !to) return;
    state.from = new Date(from + "T00:00:00Z");
    // The end day is included.
    state.to = new Date(new Date(to + "T00:00:00Z").getTime() + 864e5);
    if (state.to <= state.from) return;
    setRange("custom");
    refresh();
  });
  $("tenant-picker").addEventListener("change", (e) => {
    state.tenant = e.target.value || null;
    state.keyId = null;
    state.keysSeen = new Map();
    refresh();
  });
  $("key-picker").addEventListener("change", (e) => {
    state.keyId = e.target.value || null;
    refresh();
  });
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key-input").value.trim();
    if (key) signIn(key);
  });
  // Signing out forgets every credential this page kept.
  $("signout").addEventListener("click", () => {
    kept.forgetAll();
    state.key = null;
    state.pending = null;
    state.attempt++;
    $("switch").hidden = true;
    showLogin("");
  });

  // The charts are drawn for their box's width: drawn again when it
  // changes (a phone turned, a window resized), so their text keeps its size.
  let resized = null, width = window.innerWidth;
  window.addEventListener("resize", () => {
    if (window.innerWidth === width) return;
    width = window.innerWidth;
    clearTimeout(resized);
    resized = setTimeout(() => { if (state.key) refresh(); }, 150);
  });

  periods(null);
  setRange(state.range);
  // A key from the link's fragment signs in at once when none is in use or
  // being signed in with (or the same one); one that would replace another
  // is asked about.
  function fromLink(key) {
    const now = state.key || state.pending;
    if (!now || now === key) return signIn(key);
    askToSwitch(key, now, () => signIn(key));
  }
  window.addEventListener("hashchange", () => {
    const key = keyFromHash();
    if (key) fromLink(key);
  });
  // The tab opens with the view it showed last (the operator's or a
  // tenant's), where both credentials are kept.
  // The console's link to a tenant (#tenant=acme) opens the operator's
  // view of it.
  const linked = location.hash.match(/(?:^#|&)tenant=([^&]+)/);
  if (linked) state.tenant = decodeURIComponent(linked[1]);
  const link = keyFromHash();
  if (linked && location.hash) history.replaceState(null, "", location.pathname + location.search);
  const key = linked || sessionStorage.getItem(VIEW) !== "tenant" ? kept.admin() || kept.tenant() : kept.tenant() || kept.admin();
  if (key) signIn(key);
  else if (!link) showLogin("");
  if (link) fromLink(link);
})();
