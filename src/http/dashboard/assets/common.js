// What the usage page and the operator console share: the error log the
// browser tests read, the number format, where the key is kept, and the
// one way to call the API. Plain JS, no dependencies.
(function () {
  "use strict";
  window.__tollgateErrors = [];
  window.addEventListener("error", (e) => window.__tollgateErrors.push(String(e.message)));
  window.addEventListener("unhandledrejection", (e) => window.__tollgateErrors.push(String(e.reason)));

  const nf = new Intl.NumberFormat("en-US");
  // Money has one format on every page: dollars and cents, and "< $0.01"
  // for an amount that is not nothing but less than a cent.
  const cents = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const usd = (n) => (n === null || n === undefined ? "—" : n > 0 && n < 0.01 ? "< $0.01" : cents.format(n));

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || "HTTP " + status);
      this.status = status;
      this.code = body && body.code;
    }
  }

  // `method path` with the key (a tenant key or the admin token) as the
  // bearer, `body` as JSON; the answer's JSON, or its error as an ApiError.
  async function request(key, method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + key }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let json = null;
    try { json = await r.json(); } catch (_) { json = null; }
    if (!r.ok) throw new ApiError(r.status, json);
    return json;
  }

  // A link may carry the key in its fragment (never sent to a server); it is
  // taken out of the address bar.
  function keyFromHash() {
    const m = location.hash.match(/(?:^#|&)key=([^&]+)/);
    if (m) history.replaceState(null, "", location.pathname + location.search);
    return m ? decodeURIComponent(m[1]) : null;
  }

  // Tenant keys have a fixed shape; anything else can only be the admin token.
  const isTenantKey = (key) => /^tg_[A-Za-z0-9]{32}$/.test(key);

  // Where a credential is kept. A tenant key in localStorage (its own page,
  // across visits); the admin token only in sessionStorage, under its own
  // name (this tab, gone when it closes), so that nothing the tenant page
  // keeps or forgets touches it and it never outlives the operator's tab.
  // An admin token an older release left in localStorage is removed.
  const TENANT_KEY = "tollgate.key", ADMIN_TOKEN = "tollgate.admin";
  const left = localStorage.getItem(TENANT_KEY);
  if (left && !isTenantKey(left)) localStorage.removeItem(TENANT_KEY);
  const kept = {
    tenant: () => localStorage.getItem(TENANT_KEY),
    admin: () => sessionStorage.getItem(ADMIN_TOKEN),
    keep: (key) => (isTenantKey(key) ? localStorage.setItem(TENANT_KEY, key) : sessionStorage.setItem(ADMIN_TOKEN, key)),
    // Only that credential: another one kept meanwhile stays.
    forget: (key) => {
      const [store, name] = isTenantKey(key) ? [localStorage, TENANT_KEY] : [sessionStorage, ADMIN_TOKEN];
      if (store.getItem(name) === key) store.removeItem(name);
    },
    forgetAll: () => { localStorage.removeItem(TENANT_KEY); sessionStorage.removeItem(ADMIN_TOKEN); },
  };

  // How a credential is named on the page: a key by its prefix, the
  // admin token never by its value.
  const describe = (key) => (isTenantKey(key) ? "key " + key.slice(0, 8) + "…" : "the admin token");

  // A link's key never silently replaces the one in use: the page asks
  // (the `switch` card), and only "Switch" signs in with it.
  function askToSwitch(key, current, onSwitch) {
    const card = document.getElementById("switch");
    document.getElementById("switch-text").textContent =
      "This link signs in with " + describe(key) + ". You are signed in with " + describe(current) +
      (describe(key) === describe(current) ? " (a different one)" : "") + ". Switch?";
    card.hidden = false;
    document.getElementById("switch-yes").onclick = () => { card.hidden = true; onSwitch(); };
    document.getElementById("switch-no").onclick = () => { card.hidden = true; };
    document.getElementById("switch-no").focus();
  }

  window.Tollgate = {
    nf,
    num: (n) => (n === null || n === undefined ? "—" : nf.format(n)),
    usd,
    ApiError,
    request,
    keyFromHash,
    isTenantKey,
    kept,
    describe,
    askToSwitch,
  };
})();
