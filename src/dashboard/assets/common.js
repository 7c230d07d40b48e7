// What the usage page and the operator console share: the error log the
// browser tests read, the number format, where the key is kept, and the
// one way to call the API. Plain JS, no dependencies.
(function () {
  "use strict";
  window.__tollgateErrors = [];
  window.addEventListener("error", (e) => window.__tollgateErrors.push(String(e.message)));
  window.addEventListener("unhandledrejection", (e) => window.__tollgateErrors.push(String(e.reason)));

  const nf = new Intl.NumberFormat("en-US");

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

  window.Tollgate = {
    STORE_KEY: "tollgate.key",
    nf,
    num: (n) => (n === null || n === undefined ? "—" : nf.format(n)),
    ApiError,
    request,
    keyFromHash,
    // Tenant keys have a fixed shape; anything else can only be the admin token.
    isTenantKey: (key) => /^tg_[A-Za-z0-9]{32}$/.test(key),
  };
})();
