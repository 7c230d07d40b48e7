//! The dashboard in a real headless Chromium (WebDriver), against a real
//! server with known traffic.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use webdriver::Browser;

fn seed(s: &TestServer) -> String {
    seed_shop(s, None)
}

#[test]
fn the_dashboard_shows_the_figures_switches_ranges_and_refuses_wrong_keys() {
    let s = TestServer::start();
    let key = seed(&s);
    let b = Browser::start();
    let page = s.url("/dashboard/api-usage");

    b.goto(&format!("{page}#key={key}"));
    b.wait("the figures", "const e = document.querySelector('[data-testid=total-requests]'); return !!e && e.textContent === '46';");
    assert_eq!(b.text("calls-used"), json!("46"));
    assert_eq!(b.text("calls-limit"), json!("50"));
    assert_eq!(b.text("calls-percent"), json!("92.0%"));
    assert_eq!(
        b.js(
            "return document.getElementById('quota-card').className;",
            vec![]
        ),
        json!("card quota warn")
    );
    assert_eq!(b.text("plan-name"), json!("dash"));
    b.wait(
        "the tenant's name",
        "return document.querySelector('[data-testid=tenant-name]').textContent === 'Tenant shop';",
    );
    // One money format on the whole page: dollars and cents (ann's $0
    // beside bob's $0.045).
    let users = b.text("users").as_str().unwrap().to_string();
    assert!(
        users.contains("$0.00") && users.contains("$0.05") && !users.contains("$0.045"),
        "{users}"
    );
    // The token quota beside the calls, with the period's cost so far; no
    // limit is said in words ("9,000 · no monthly limit", not "of unlimited").
    assert_eq!(b.text("tokens-used"), json!("9,000"));
    assert_eq!(
        b.js("return document.querySelector('[data-testid=tokens-card] .quota-figures').textContent.replace(/\\s+/g, ' ').trim();", vec![]),
        json!("9,000 · no monthly limit")
    );
    assert_eq!(
        b.text("tokens-remaining"),
        json!("Tokens are not limited on this plan")
    );
    assert_eq!(b.text("period-cost"), json!("$0.05 so far this period"));
    // Every amount of money on the page has two decimals (or is "< $0.01").
    let amounts = b.js(
        "return document.body.textContent.match(/\\$[0-9][0-9,]*(\\.[0-9]+)?/g);",
        vec![],
    );
    assert!(
        amounts.as_array().unwrap().iter().all(|a| a
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .map(str::len)
            == Some(2)),
        "{amounts}"
    );
    // The first screen: the quota, the spend chart and one table, above
    // the fold of a laptop's window; the rest behind tabs.
    let fold = b.js(
        "const top = (id) => document.querySelector('[data-testid=' + id + ']').getBoundingClientRect().top; \
         return [top('quota-card'), top('cost-chart'), top('models'), window.innerHeight];",
        vec![],
    );
    let fold: Vec<f64> = fold
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        fold[2] < fold[3] - 40.0,
        "the models table starts above the fold: {fold:?}"
    );
    assert_eq!(
        b.js("return ['panel-traffic', 'panel-breakdowns', 'panel-people', 'panel-plan'].map((id) => document.querySelector('[data-testid=' + id + ']').hidden);", vec![]),
        json!([false, true, true, true])
    );
    // Spend is the headline: a stacked bar a day (the week's first and
    // last days partial), each model in its colour, the legend with totals.
    assert_eq!(b.text("cost"), json!("$0.05"));
    assert_eq!(b.text("cost-note"), json!("in the last 7 days"));
    assert_eq!(
        b.js("const c = document.querySelector('[data-testid=cost-chart]').dataset; return [c.bucket, c.points, c.partials];", vec![]),
        json!(["day", "8", "2"])
    );
    assert_eq!(
        b.js(
            "return document.querySelectorAll('[data-testid=cost-chart] rect.seg.m0').length;",
            vec![]
        ),
        json!(1)
    );
    assert!(b
        .text("model-costs")
        .as_str()
        .unwrap()
        .contains("gpt-4o$0.05 · 100%"));
    // Money ticks are round and in cents: $0.00, $0.02, $0.04, $0.06.
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=cost-chart]').dataset.ticks;",
            vec![]
        ),
        json!("0.00,0.02,0.04,0.06")
    );
    // Round ticks on the requests axis (a step of 1, 2, 2.5 or 5 times a
    // power of ten), axis titles, and the bucket still filling marked.
    let ticks: Vec<f64> = b
        .js(
            "return document.querySelector('[data-testid=chart]').dataset.ticks;",
            vec![],
        )
        .as_str()
        .unwrap()
        .split(',')
        .map(|t| t.parse().unwrap())
        .collect();
    let step = ticks[1] - ticks[0];
    let mantissa = step / 10f64.powf(step.log10().floor());
    assert!(
        [1.0, 2.0, 2.5, 5.0]
            .iter()
            .any(|m| (m - mantissa).abs() < 1e-9),
        "{ticks:?}"
    );
    assert!(
        ticks
            .iter()
            .enumerate()
            .all(|(i, t)| (t - step * i as f64).abs() < 1e-9),
        "{ticks:?}"
    );
    assert!(*ticks.last().unwrap() >= 46.0 / 2.0, "{ticks:?}");
    assert!(b
        .text("chart")
        .as_str()
        .unwrap()
        .contains("requests / hour"));
    // Time labels at round instants: the 7 days of hours are labelled at
    // midnights (by date), over the requests and over the cost.
    for chart in ["chart", "cost-chart"] {
        let xticks = b
            .js(
                &format!("return document.querySelector('[data-testid={chart}]').dataset.xticks;"),
                vec![],
            )
            .as_str()
            .unwrap()
            .to_string();
        let xticks: Vec<&str> = xticks.split(',').collect();
        assert!(
            (4..=8).contains(&xticks.len()) && xticks.iter().all(|t| t.contains("T00:00:00")),
            "{chart}: {xticks:?}"
        );
    }
    // Partial buckets at both ends: the first hour starts before the
    // range, the last is still filling.
    assert_eq!(
        b.js("const r = [...document.querySelectorAll('[data-testid=chart] rect.bar-req')]; return [r.length, r[0].dataset.partial, r[r.length - 1].dataset.partial, r.filter((x) => x.dataset.partial).length];", vec![]),
        json!([169, "true", "true", 2])
    );
    // The readout: the latest bucket by default; the arrow keys and the
    // pointer move the crosshair to another bucket and read it out.
    let readout = b.text("readout").as_str().unwrap().to_string();
    assert!(
        readout.contains("(in progress)")
            && readout.contains("46 requests")
            && readout.contains("9,000 tokens")
            && readout.contains("2 errors")
            && readout.contains("$0.05"),
        "{readout}"
    );
    b.js("const svg = document.querySelector('[data-testid=chart] svg'); svg.focus(); svg.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowLeft', bubbles: true}));", vec![]);
    let earlier = b.text("readout").as_str().unwrap().to_string();
    assert!(
        earlier.contains("0 requests") && !earlier.contains("in progress"),
        "{earlier}"
    );
    b.js("const o = document.querySelector('[data-testid=chart] .overlay'); const r = o.getBoundingClientRect(); o.dispatchEvent(new PointerEvent('pointermove', {clientX: r.left + 2, clientY: r.top + 5, bubbles: true}));", vec![]);
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=chart]').dataset.selected;",
            vec![]
        ),
        json!("0")
    );
    // Export: the range's records as a CSV file.
    b.click("export");
    b.wait("the export", "return window.__tollgateExported > 0;");
    if let Ok(dir) = std::env::var("TOLLGATE_SCREENSHOTS") {
        b.screenshot(&std::path::Path::new(&dir).join("tenant.png"));
        b.js(
            "document.querySelector('[data-testid=cost-chart]').scrollIntoView();",
            vec![],
        );
        b.screenshot(&std::path::Path::new(&dir).join("tenant-lower.png"));
        b.js(
            "document.querySelector('[data-testid=forecast]').scrollIntoView();",
            vec![],
        );
        b.screenshot(&std::path::Path::new(&dir).join("tenant-forecast.png"));
        b.js("window.scrollTo(0, 0);", vec![]);
    }
    assert_eq!(b.text("success-rate"), json!("95.7%"), "44 of 46");
    assert_eq!(b.text("total-tokens"), json!("9,000"));
    assert_eq!(
        b.text("cost"),
        json!("$0.05"),
        "6 x (1000 x 2.5e-6 + 500 x 1e-5) = $0.045"
    );
    // Where it went, by token kind: $0.015 of prompt, $0.03 of output.
    let split = b.text("cost-split").as_str().unwrap().to_string();
    assert!(split == "$0.02 input · $0.03 output", "{split}");
    // Peak hours on a round axis, the busiest hour in its own colour,
    // both in the legend; the rate to two significant digits.
    let ticks = b.js(
        "return document.querySelector('[data-testid=hours]').dataset.ticks;",
        vec![],
    );
    assert_eq!(ticks, json!("0,20,40,60"), "46 requests in one hour");
    assert_eq!(
        b.js(
            "return document.querySelectorAll('[data-testid=hours] rect.peak').length;",
            vec![]
        ),
        json!(1)
    );
    assert!(b
        .text("hours-legend")
        .as_str()
        .unwrap()
        .contains("Busiest hour"));
    // Every mark has its legend: the spend's models and pale partial
    // days, the forecast's used, projected and quota.
    assert!(b
        .text("model-costs")
        .as_str()
        .unwrap()
        .contains("Pale: a partial day"));
    let forecast = b.text("forecast-legend").as_str().unwrap().to_string();
    assert!(
        forecast.contains("Calls used")
            && forecast.contains("Projected")
            && forecast.contains("Quota"),
        "{forecast}"
    );
    assert!(b
        .text("chart-legend")
        .as_str()
        .unwrap()
        .contains("Unusual, higher"));
    let rpm = b.text("rpm").as_str().unwrap().to_string();
    assert!(
        rpm.ends_with(" a minute")
            && rpm
                .trim_end_matches(" a minute")
                .replace(['.', '0'], "")
                .len()
                <= 2,
        "{rpm}"
    );
    let endpoints = b.text("endpoints").as_str().unwrap().to_string();
    assert!(
        endpoints.contains("POST /v1/search") && endpoints.contains("POST /api/chat"),
        "{endpoints}"
    );
    assert!(b.text("models").as_str().unwrap().contains("gpt-4o"));
    // Usage by the key that made it, by the key's name.
    let keys = b.text("keys").as_str().unwrap().to_string();
    assert!(keys.contains("test (key_"), "{keys}");
    // Each limit with what is left of it: the plan's month, and the end
    // user's own (40 of 100 used).
    let limits = b.text("limits").as_str().unwrap().to_string();
    assert!(limits.contains("month · calls a month"), "{limits}");
    assert!(
        limits.contains("per-user · calls a day")
            && limits.contains("user ann")
            && limits.contains("60"),
        "{limits}"
    );
    assert!(b.text("users").as_str().unwrap().contains("ann"));
    assert!(b.text("bots").as_str().unwrap().contains("helper"));
    assert!(b.text("forecast").as_str().unwrap().contains("calls"));
    // The forecast as a gauge: used, projected and the quota on one scale.
    let gauge = b.text("forecast-chart").as_str().unwrap().to_string();
    assert!(
        gauge.contains("used 46") && gauge.contains("projected ") && gauge.contains("quota 50"),
        "{gauge}"
    );
    assert_eq!(
        b.js("return location.hash;", vec![]),
        json!(""),
        "the key leaves the address bar"
    );
    assert_eq!(
        b.js("return localStorage.getItem('tollgate.key');", vec![]),
        json!(key)
    );

    // The range switch changes the chart.
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=chart]').dataset.range;",
            vec![]
        ),
        json!("week")
    );
    let week_points = b.js(
        "return Number(document.querySelector('[data-testid=chart]').dataset.points);",
        vec![],
    );
    b.click("range-day");
    b.wait(
        "the day chart",
        "return document.querySelector('[data-testid=chart]').dataset.range === 'day';",
    );
    let day_points = b.js(
        "return Number(document.querySelector('[data-testid=chart]').dataset.points);",
        vec![],
    );
    assert!(
        week_points.as_u64().unwrap() >= 168 && day_points.as_u64().unwrap() <= 25,
        "{week_points} vs {day_points}"
    );
    assert!(
        b.js(
            "return document.querySelectorAll('[data-testid=chart] rect').length;",
            vec![]
        )
        .as_u64()
        .unwrap()
            >= 24
    );

    // The tenant was made today: no earlier month is offered.
    assert_eq!(
        b.js("const p = document.querySelector('[data-testid=period-picker]'); return [p.options.length, p.disabled, p.options[0].text];", vec![]),
        json!([1, true, "No earlier months"])
    );
    // "Custom" is what is pressed once chosen, its dates those of the range
    // shown; yesterday alone (nothing), then today (everything).
    b.click("range-custom");
    let pressed = "return [...document.querySelectorAll('.switch button')].filter((b) => b.getAttribute('aria-pressed') === 'true').map((b) => b.dataset.range);";
    assert_eq!(b.js(pressed, vec![]), json!(["custom"]));
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=custom-to]').value;",
            vec![]
        ),
        json!(chrono::Utc::now().format("%Y-%m-%d").to_string())
    );
    b.js("const d = new Date(Date.now() - 864e5).toISOString().slice(0, 10); document.querySelector('[data-testid=custom-from]').value = d; document.querySelector('[data-testid=custom-to]').value = d;", vec![]);
    b.click("custom-apply");
    b.wait(
        "yesterday",
        "return document.querySelector('[data-testid=chart]').dataset.range === 'custom' && document.querySelector('[data-testid=total-requests]').textContent === '0';",
    );
    // An empty range says so; it claims nothing about traffic it has not seen.
    assert_eq!(b.text("anomalies"), json!("No traffic in this range yet."));
    assert!(b.text("cost-note").as_str().unwrap().starts_with("on "));
    b.js("const d = new Date().toISOString().slice(0, 10); document.querySelector('[data-testid=custom-from]').value = d; document.querySelector('[data-testid=custom-to]').value = d;", vec![]);
    b.click("custom-apply");
    b.wait(
        "today",
        "return document.querySelector('[data-testid=total-requests]').textContent === '46';",
    );
    assert_eq!(b.js(pressed, vec![]), json!(["custom"]));
    // By the hour for a range of a day or two.
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=cost-chart]').dataset.bucket;",
            vec![]
        ),
        json!("hour")
    );
    b.click("range-week");
    b.wait(
        "the week again",
        "return document.querySelector('[data-testid=chart]').dataset.range === 'week' && document.getElementById('custom-range').hidden;",
    );

    // Dark mode follows the system's setting.
    let background = || {
        b.js(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
    };
    assert_eq!(background(), json!("rgb(245, 246, 248)"));
    b.cdp(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    assert_eq!(background(), json!("rgb(15, 19, 26)"));
    if let Ok(dir) = std::env::var("TOLLGATE_SCREENSHOTS") {
        b.screenshot(&std::path::Path::new(&dir).join("tenant-dark.png"));
    }
    b.cdp(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "light"}]}),
    );

    // A phone-sized window does not scroll sideways, and each table's
    // money stays on the screen (its rows are cards of labelled lines).
    b.resize(375, 800);
    b.wait(
        "the phone layout",
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
    );
    let cut = b.js(
        "return [...document.querySelectorAll('table.cards td[data-label=Cost]')].filter((td) => td.offsetParent !== null) \
           .map((td) => [td.closest('table').id, td.getBoundingClientRect().right, window.innerWidth]);",
        vec![],
    );
    let cut = cut.as_array().unwrap();
    assert!(!cut.is_empty());
    assert!(
        cut.iter()
            .all(|c| c[1].as_f64().unwrap() <= c[2].as_f64().unwrap()),
        "{cut:?}"
    );
    if let Ok(dir) = std::env::var("TOLLGATE_SCREENSHOTS") {
        b.screenshot(&std::path::Path::new(&dir).join("tenant-phone.png"));
    }

    // Errors: none in the page, none in the console.
    assert_eq!(b.js("return window.__tollgateErrors;", vec![]), json!([]));
    assert_eq!(b.console_errors(), Vec::<String>::new());

    // A wrong key gets a clear message, not a blank page.
    // A link with another key does not silently replace the one in use
    // (issue 37, 8b): the page asks, and keeps the current one until told.
    b.goto(&format!("{page}#key=tg_thisKeyDoesNotExist0000000000000"));
    b.wait(
        "the question",
        "return !document.querySelector('[data-testid=switch]').hidden;",
    );
    let question = b.text("switch-text").as_str().unwrap().to_string();
    assert!(
        question.contains("key tg_thisK…") && question.contains(&format!("key {}…", &key[..8])),
        "{question}"
    );
    assert_eq!(b.js("return location.hash;", vec![]), json!(""));
    b.click("switch-no");
    b.goto(&format!("{page}#key=tg_thisKeyDoesNotExist0000000000000"));
    b.wait(
        "the question again",
        "return !document.querySelector('[data-testid=switch]').hidden;",
    );
    assert_eq!(
        b.js("return localStorage.getItem('tollgate.key');", vec![]),
        json!(key),
        "the kept key is untouched"
    );
    assert_eq!(b.text("total-requests"), json!("46"), "still signed in");
    b.click("switch-yes");
    b.wait(
        "the wrong-key message",
        "const e = document.querySelector('[data-testid=login-error]'); return !!e && !e.hidden;",
    );
    let message = b.text("login-error");
    assert!(
        message.as_str().unwrap().contains("not accepted"),
        "the first message shown is the wrong key's: {message}"
    );
    let refused = b.console_errors();
    assert!(
        refused.iter().all(|e| e.contains("401")),
        "only the refused key's 401: {refused:?}"
    );

    // The admin token opens the operator view with a tenant picker.
    b.resize(1280, 1000);
    b.goto(&format!("{page}#key={ADMIN}"));
    b.wait("the operator view", "const e = document.querySelector('[data-testid=admin-summary]'); return !!e && e.textContent.startsWith('1 tenant ·');");
    assert!(b.text("top-tenants").as_str().unwrap().contains("shop"));
    assert_eq!(b.text("total-requests"), json!("46"));
    b.js("const p = document.querySelector('[data-testid=tenant-picker]'); p.value = 'shop'; p.dispatchEvent(new Event('change'));", vec![]);
    b.wait("the picked tenant", "return document.querySelector('[data-testid=calls-used]').textContent === '46' && !document.getElementById('quota-card').hidden;");
    // The operator exports the picked tenant's records too.
    b.js("window.__tollgateExported = 0;", vec![]);
    b.click("export");
    b.wait(
        "the operator's export",
        "return window.__tollgateExported > 0;",
    );
    assert_eq!(b.console_errors(), Vec::<String>::new());
    if let Ok(dir) = std::env::var("TOLLGATE_SCREENSHOTS") {
        b.screenshot(&std::path::Path::new(&dir).join("operator.png"));
    }
}

#[test]
fn assets_are_embedded_and_unknown_dashboard_paths_are_json_404s() {
    let s = TestServer::start();
    for (path, ct) in [
        ("/dashboard/api-usage", "text/html"),
        ("/dashboard/assets/common.js", "text/javascript"),
        ("/dashboard/assets/app.js", "text/javascript"),
        ("/dashboard/console", "text/html"),
        ("/dashboard/assets/console.js", "text/javascript"),
        ("/dashboard/assets/style.css", "text/css"),
        ("/docs", "text/html"),
        ("/dashboard/assets/docs.js", "text/javascript"),
        ("/dashboard/assets/docs.css", "text/css"),
        ("/docs/API.md", "text/markdown"),
    ] {
        let r = s.http.get(s.url(path)).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(header(&r, "content-type").unwrap().starts_with(ct));
        let csp = header(&r, "content-security-policy").unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(header(&r, "x-frame-options").as_deref(), Some("DENY"));
        let body = r.text().unwrap().replace("http://www.w3.org/2000/svg", "");
        // (The guide is text that names URLs; it loads nothing.)
        assert!(
            ct == "text/markdown"
                || !body.contains("http:") && !body.contains("https:") && !body.contains("//cdn"),
            "{path} loads nothing from elsewhere"
        );
    }
    for path in [
        "/dashboard/",
        "/dashboard/nope",
        "/dashboard/assets/../../Cargo.toml",
        "/dashboard/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/dashboard/assets/missing.js",
    ] {
        error_body(s.http.get(s.url(path)).send().unwrap(), 404, "not_found");
    }
}

/// `/docs` renders the OpenAPI document in the browser, offline: every
/// operation, its parameters and responses, and the schemas, with links
/// from a reference to its schema.
#[test]
fn the_api_reference_renders_every_operation_and_schema() {
    let s = TestServer::start();
    let doc: Value = s
        .http
        .get(s.url("/api/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    let schemas = doc["components"]["schemas"].as_object().unwrap().len();
    let b = Browser::start();
    b.goto(&s.url("/docs"));
    b.wait(
        "the reference",
        "return document.querySelectorAll('[data-testid=operation]').length > 0;",
    );
    assert_eq!(
        b.js(
            "return document.querySelectorAll('[data-testid=operation]').length;",
            vec![]
        ),
        json!(operations)
    );
    assert_eq!(
        b.js(
            "return document.querySelectorAll('[data-testid=schema]').length;",
            vec![]
        ),
        json!(schemas)
    );
    let toc = b.text("toc").as_str().unwrap().to_string();
    assert!(
        toc.contains("enforcement") && toc.contains("Schemas"),
        "{toc}"
    );
    // A reference links to its schema, which is on the page.
    assert_eq!(
        b.js(
            "const a = [...document.querySelectorAll('a[href=\"#schema-Plan\"]')]; \
             return a.length > 0 && !!document.getElementById('schema-Plan');",
            vec![]
        ),
        json!(true)
    );
    let reference = b.text("reference").as_str().unwrap().to_string();
    assert!(reference.contains("/api/v1/authorize"), "{reference}");
    // Issue 41, item 5: the guides first (docs/API.md's errors,
    // authentication and rate-limit headers), then the enforcement routes;
    // the dashboard's page last.
    let order = b.js(
        "return [...document.querySelectorAll('#reference > h2, #reference > section.guide > h2')].map((h) => h.textContent);",
        vec![],
    );
    let order: Vec<&str> = order
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        &order[..4],
        [
            "Errors",
            "Authentication",
            "Rate-limit headers",
            "enforcement"
        ],
        "{order:?}"
    );
    assert_eq!(
        order[order.len() - 2..],
        ["dashboard", "Schemas"],
        "{order:?}"
    );
    let guides = b.js(
        "return [...document.querySelectorAll('[data-testid=guide]')].map((g) => g.innerText).join('\\n');",
        vec![],
    );
    let guides = guides.as_str().unwrap();
    assert!(
        guides.contains("quota_exceeded") && guides.contains("RateLimit-Policy"),
        "{guides}"
    );
    // Code is rendered as code: no backtick is left in the text, and the
    // error codes are <code>.
    if let Some(i) = reference.find('`') {
        let from = reference[..i]
            .char_indices()
            .rev()
            .nth(80)
            .map_or(0, |(j, _)| j);
        let to = reference[i..]
            .char_indices()
            .nth(80)
            .map_or(reference.len(), |(j, _)| i + j);
        panic!("a literal backtick: ...{}...", &reference[from..to]);
    }
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll('[data-testid=guide] code')].some((c) => c.textContent === 'quota_exceeded');",
            vec![]
        ),
        json!(true)
    );
    // Authentication in words, not the schemes' identifiers.
    assert!(
        reference.contains("Authentication: a tenant's API key as Authorization: Bearer, or the key in the X-API-Key header"),
        "{reference}"
    );
    assert!(!reference.contains("tenantKeyHeader"), "{reference}");
    // An example of every call, and of its answer where it has a JSON body:
    // the authorize example parses, with a request body.
    assert_eq!(
        b.js(
            "return document.querySelectorAll('[data-testid=operation] [data-testid=example]').length;",
            vec![]
        ),
        json!(operations)
    );
    let authorize = b.js(
        "const op = document.getElementById('op-post_api_v1_authorize'); \
         return [op.querySelector('[data-testid=example] pre').innerText, op.querySelector('[data-testid=answer]').innerText];",
        vec![],
    );
    let call = authorize[0].as_str().unwrap();
    assert!(
        call.starts_with(&format!("curl -X POST '{}'", s.url("/api/v1/authorize")))
            && call.contains("Authorization: Bearer $KEY")
            && call.contains("-d '{"),
        "{call}"
    );
    let answer: Value = serde_json::from_str(authorize[1].as_str().unwrap()).unwrap();
    assert!(answer.get("allowed").is_some(), "{answer}");
    // Column headings are words, never broken mid-word.
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll('.docs th')].every((th) => getComputedStyle(th).whiteSpace === 'nowrap');",
            vec![]
        ),
        json!(true)
    );
    // Readable on a phone: nothing scrolls sideways.
    b.resize(390, 844);
    b.wait(
        "the phone layout",
        "return document.documentElement.scrollWidth <= window.innerWidth;",
    );
    assert!(b.console_errors().is_empty(), "{:?}", b.console_errors());
}

/// Sets a form field (by `data-testid`) as typing would.
/// Adds a row to the console's limits editor, as an operator would: the
/// button, then each field (`name, scope, measure, window, amount`).
fn add_limit(b: &Browser, fields: &[&str; 5]) {
    b.click("limits-add");
    b.js(
        "const r = [...document.querySelectorAll('[data-testid=limits-rows] tr.limit-row')].pop(); \
         ['name', 'scope', 'measure', 'window', 'amount'].forEach((f, i) => { \
           const e = r.querySelector('[data-field=' + f + ']'); e.value = arguments[0][i]; \
           if (e.value !== arguments[0][i]) throw new Error(f + ' cannot be ' + arguments[0][i]); \
           e.dispatchEvent(new Event('change', {bubbles: true})); });",
        vec![json!(fields)],
    );
}

fn fill(b: &Browser, testid: &str, value: &str) {
    b.js(
        "const e = document.querySelector('[data-testid=\"' + arguments[0] + '\"]'); e.value = arguments[1]; e.dispatchEvent(new Event('input'));",
        vec![json!(testid), json!(value)],
    );
}

/// The operator console, in Chromium, through the admin API only: create a
/// plan, a tenant on it and a key; the key works until its quota is spent;
/// a conflicting create shows the API's JSON error; suspending refuses the
/// key, activating lets it in again; revoking it stops it; sorting works.
#[test]
fn the_operator_console_manages_plans_tenants_and_keys() {
    let s = TestServer::start();
    let b = Browser::start();
    b.resize(1280, 1000);
    b.goto(&format!("{}#key={ADMIN}", s.url("/dashboard/console")));
    b.wait(
        "the console",
        "return !document.getElementById('console').hidden && document.querySelectorAll('[data-testid=plans] tr[data-plan]').length > 0;",
    );
    assert_eq!(
        b.js("return location.hash;", vec![]),
        json!(""),
        "the token leaves the address bar"
    );

    fill(&b, "plan-id", "team");
    fill(&b, "plan-name", "Team");
    fill(&b, "plan-calls", "3");
    fill(&b, "plan-rate", "50");
    fill(&b, "plan-price", "19");
    b.click("save-plan");
    b.wait(
        "the new plan",
        "return !!document.querySelector('[data-testid=plans] tr[data-plan=team]');",
    );
    let plan: Value = s
        .admin("GET", "/api/admin/plans/team", None)
        .json()
        .unwrap();
    assert_eq!(plan["monthlyCalls"], 3, "{plan}");
    assert_eq!(plan["rateLimit"]["requests"], 50, "{plan}");
    assert_eq!(plan["priceUsdMonthly"], 19.0, "{plan}");

    // A new tenant starts on the cheapest plan.
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=tenant-plan]').value;",
            vec![]
        ),
        json!("free")
    );
    fill(&b, "tenant-id", "acme");
    fill(&b, "tenant-name", "Acme Inc");
    fill(&b, "tenant-plan", "team");
    b.click("create-tenant");
    b.wait(
        "the new tenant",
        "return !!document.querySelector('[data-testid=tenants] tr[data-tenant=acme]');",
    );
    assert!(b.text("tenants").as_str().unwrap().contains("Acme Inc"));

    // The same id again: the API's 409, shown beside the form.
    fill(&b, "tenant-id", "acme");
    fill(&b, "tenant-plan", "team");
    b.click("create-tenant");
    b.wait(
        "the conflict",
        "const e = document.querySelector('[data-testid=tenant-form-error]'); return !!e && !e.hidden;",
    );
    assert!(
        b.text("tenant-form-error")
            .as_str()
            .unwrap()
            .starts_with("conflict: "),
        "{}",
        b.text("tenant-form-error")
    );
    // The tenant's name leads to its usage on the dashboard.
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=dashboard-of-acme]').getAttribute('href');",
            vec![]
        ),
        json!("/dashboard/api-usage#tenant=acme")
    );

    b.click("keys-acme");
    b.wait(
        "the keys card",
        "return !document.getElementById('keys-card').hidden;",
    );
    fill(&b, "key-name", "production");
    b.click("create-key");
    b.wait(
        "the new key",
        "return !document.querySelector('[data-testid=new-key]').hidden;",
    );
    let key = b.text("new-key-value").as_str().unwrap().to_string();
    assert!(key.starts_with("tg_"), "{key}");
    // Shown once, with a button that copies it (or, where the page may not
    // write the clipboard, selects it to copy by hand).
    b.click("copy-key");
    b.wait(
        "the copy",
        "return document.querySelector('[data-testid=copy-said]').textContent !== '';",
    );
    let said = b.text("copy-said").as_str().unwrap().to_string();
    if said != "Copied." {
        assert!(said.starts_with("Selected"), "{said}");
        assert_eq!(
            b.js("return getSelection().toString();", vec![]),
            json!(key)
        );
    }
    let authorize = |key: &str| {
        s.tenant(key, "POST", "/api/v1/authorize", None)
            .status()
            .as_u16()
    };
    assert_eq!(authorize(&key), 200);

    // Suspend (it asks first: one click only arms it): the key is refused
    // (403); activate: it works again.
    b.click("status-acme");
    assert_eq!(
        s.admin("GET", "/api/admin/tenants/acme", None)
            .json::<Value>()
            .unwrap()["status"],
        "active",
        "one click only asks"
    );
    b.click("status-acme");
    b.wait(
        "suspended",
        "const r = document.querySelector('[data-testid=tenants] tr[data-tenant=acme]'); return !!r && r.textContent.includes('suspended');",
    );
    assert_eq!(authorize(&key), 403);
    b.click("status-acme");
    b.wait(
        "active again",
        "const r = document.querySelector('[data-testid=tenants] tr[data-tenant=acme]'); return !!r && r.textContent.includes('active');",
    );
    assert_eq!(authorize(&key), 200);
    assert_eq!(authorize(&key), 200);
    assert_eq!(authorize(&key), 429, "the plan's 3 calls are spent");

    // The figures: the tenant is at its quota; sorting by quota puts it first.
    let other = s.tenant_with_key("quiet", "team");
    assert_eq!(authorize(&other), 200);
    wait_until(|| s.report("acme")["summary"]["totalRequests"] == 5);
    b.click("refresh");
    b.click("sort-id");
    b.wait(
        "the tenants by id, with acme's figures",
        "const rows = [...document.querySelectorAll('[data-testid=tenants] tr[data-tenant]')]; return rows.length === 2 && rows[0].dataset.tenant === 'acme' && rows[0].textContent.includes('100.0%');",
    );
    b.click("sort-quota");
    b.wait(
        "the tenants by quota",
        "const rows = [...document.querySelectorAll('[data-testid=tenants] tr[data-tenant]')]; return rows[0].dataset.tenant === 'acme' && rows[0].textContent.includes('100.0%');",
    );

    // Limits of SPEC §12, set in the console: each end user of quiet may
    // make one call a day; the standing table then shows who is at it.
    b.click("limits-quiet");
    b.wait(
        "the limits card",
        "return !document.getElementById('limits-card').hidden && !document.querySelector('[data-testid=limits-none]').hidden;",
    );
    add_limit(&b, &["per-user", "user", "calls", "day", "1"]);
    // Every field in words, the amount with the measure's unit; seconds
    // and burst only for a burst window.
    let row = b.js(
        "const r = [...document.querySelectorAll('[data-testid=limits-rows] tr.limit-row')].pop(); \
         return [r.querySelector('[data-field=scope]').selectedOptions[0].text, r.querySelector('[data-field=unit]').textContent, r.querySelector('[data-field=burst]').disabled];",
        vec![],
    );
    assert_eq!(row, json!(["each end user", "calls", true]));
    b.click("save-limits");
    wait_until(|| {
        s.admin("GET", "/api/admin/tenants/quiet/limits", None)
            .json::<Value>()
            .unwrap()["limits"][0]["name"]
            == "per-user"
    });
    let as_user = |user: &str| {
        s.tenant(
            &other,
            "POST",
            "/api/v1/authorize",
            Some(json!({"userId": user})),
        )
        .status()
        .as_u16()
    };
    assert_eq!(as_user("ula"), 200);
    assert_eq!(as_user("ula"), 429, "ula's one call a day");
    b.click("limits-quiet");
    b.wait(
        "who is at which limit",
        "return document.querySelector('[data-testid=limits-standing]').textContent.includes('user ula');",
    );
    // The saved list comes back as rows; a budget in dollars added
    // beside it shows its unit, and a burst takes its seconds and burst.
    b.wait(
        "the saved row",
        "const r = document.querySelectorAll('[data-testid=limits-rows] tr.limit-row'); return r.length === 1 && r[0].querySelector('[data-field=name]').value === 'per-user';",
    );
    add_limit(
        &b,
        &["budget", "tenant", "spendUsd", "billingMonth", "12.5"],
    );
    add_limit(&b, &["fast", "model", "calls", "burst", "10"]);
    b.js("const r = [...document.querySelectorAll('[data-testid=limits-rows] tr.limit-row')].pop(); for (const [f, v] of [['perSeconds', '60'], ['burst', '20']]) { const e = r.querySelector('[data-field=' + f + ']'); e.value = v; e.dispatchEvent(new Event('change', {bubbles: true})); }", vec![]);
    assert_eq!(
        b.js("return [...document.querySelectorAll('[data-testid=limits-rows] [data-field=unit]')].map((u) => u.textContent);", vec![]),
        json!(["calls", "USD", "calls"])
    );
    b.click("save-limits");
    wait_until(|| {
        let l: Value = s
            .admin("GET", "/api/admin/tenants/quiet/limits", None)
            .json()
            .unwrap();
        l["limits"]
            == json!([
                {"name": "per-user", "scope": "user", "measure": "calls", "window": "day", "amount": 1.0},
                {"name": "budget", "scope": "tenant", "measure": "spendUsd", "window": "billingMonth", "amount": 12.5},
                {"name": "fast", "scope": "model", "measure": "calls", "window": "burst", "amount": 10.0, "perSeconds": 60, "burst": 20}
            ])
    });
    if let Ok(dir) = std::env::var("TOLLGATE_SCREENSHOTS") {
        b.js(
            "document.getElementById('limits-card').scrollIntoView();",
            vec![],
        );
        b.screenshot(&std::path::Path::new(&dir).join("console-limits.png"));
    }
    // A bad limit: the API's 422, shown beside the form.
    b.wait(
        "the saved rows",
        "return document.querySelectorAll('[data-testid=limits-rows] tr.limit-row').length === 3;",
    );
    add_limit(&b, &["Not A Name", "tenant", "calls", "day", "5"]);
    b.click("save-limits");
    b.wait(
        "the refused limit",
        "const e = document.querySelector('[data-testid=limits-form-error]'); return !!e && !e.hidden && e.textContent.includes('Not A Name');",
    );
    // Removing rows and saving lifts them.
    b.js("for (const r of [...document.querySelectorAll('[data-testid=limits-rows] tr.limit-row')].slice(1)) r.querySelector('button').click();", vec![]);
    b.click("save-limits");
    wait_until(|| {
        s.admin("GET", "/api/admin/tenants/quiet/limits", None)
            .json::<Value>()
            .unwrap()["limits"]
            .as_array()
            .unwrap()
            .len()
            == 1
    });

    // A key's own limits, set from the keys card.
    b.click(&format!("limits-key-{}", &key[..8]));
    b.wait(
        "the key's limits",
        "return document.querySelector('[data-testid=limits-title]').textContent.includes('key key_') && document.querySelectorAll('[data-testid=limits-rows] tr.limit-row').length === 0;",
    );
    add_limit(&b, &["key-hour", "key", "calls", "hour", "100"]);
    // A key's own limits count for the key alone: no other scope offered.
    assert_eq!(
        b.js("return [...document.querySelector('[data-testid=limits-rows] tr.limit-row [data-field=scope]').options].map((o) => o.value);", vec![]),
        json!(["key"])
    );
    b.click("save-limits");
    wait_until(|| {
        let keys: Value = s
            .admin("GET", "/api/admin/tenants/acme/keys", None)
            .json()
            .unwrap();
        keys["data"][0]["limits"][0]["name"] == "key-hour"
    });

    // Revoke asks twice, then the key stops working.
    let prefix = &key[..8];
    b.click(&format!("revoke-{prefix}"));
    b.click(&format!("revoke-{prefix}"));
    b.wait(
        "the revoked key",
        "return document.querySelector('[data-testid=keys]').textContent.includes('revoked');",
    );
    assert_eq!(authorize(&key), 401);

    assert_eq!(b.js("return window.__tollgateErrors;", vec![]), json!([]));
    let errors = b.console_errors();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("409") || e.contains("422")),
        "only the conflict's 409 and the bad limit's 422: {errors:?}"
    );
    if let Ok(dir) = std::env::var("TOLLGATE_SCREENSHOTS") {
        b.screenshot(&std::path::Path::new(&dir).join("console.png"));
    }
    // A phone-sized window: the page itself does not scroll sideways.
    b.resize(390, 844);
    b.wait(
        "the phone layout",
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
    );
    if let Ok(dir) = std::env::var("TOLLGATE_SCREENSHOTS") {
        b.screenshot(&std::path::Path::new(&dir).join("console-phone.png"));
    }
}

/// Issue 37, 8b: the admin token is kept only in the tab's sessionStorage,
/// apart from the tenant key in localStorage (one an older release left
/// there is removed); a link with a tenant key asks before it replaces the
/// operator's sign-in and leaves the token alone; the console signs out,
/// and then nothing in the browser opens it again.
#[test]
fn the_admin_token_is_kept_apart_asked_about_and_signed_out() {
    let s = TestServer::start();
    let key = seed(&s);
    let b = Browser::start();
    b.resize(1280, 1000);
    let console = s.url("/dashboard/console");
    let page = s.url("/dashboard/api-usage");

    // An admin token an older release kept in localStorage is removed.
    b.goto(&console);
    b.js(
        "localStorage.setItem('tollgate.key', arguments[0]);",
        vec![json!(ADMIN)],
    );
    b.goto(&console);
    b.wait(
        "the sign-in",
        "return !document.getElementById('login').hidden;",
    );
    assert_eq!(b.js("return localStorage.length;", vec![]), json!(0));

    // Signed in through the form: the token is in this tab only.
    fill(&b, "token-input", ADMIN);
    b.click("sign-in");
    b.wait(
        "the console",
        "return !document.getElementById('console').hidden && !document.querySelector('[data-testid=signout]').hidden;",
    );
    let kept = "return [Object.values(localStorage), sessionStorage.getItem('tollgate.admin')];";
    assert_eq!(b.js(kept, vec![]), json!([[], ADMIN]));

    // The usage page in the same tab opens the operator view; a tenant's
    // link asks first, and switching keeps the token where it was.
    b.goto(&page);
    b.wait("the operator view", "const e = document.querySelector('[data-testid=admin-summary]'); return !!e && e.textContent.startsWith('1 tenant ·');");
    b.goto(&format!("{page}#key={key}"));
    b.wait(
        "the question",
        "return !document.querySelector('[data-testid=switch]').hidden;",
    );
    let question = b.text("switch-text").as_str().unwrap().to_string();
    assert!(
        question.contains("signed in with the admin token") && !question.contains(ADMIN),
        "{question}"
    );
    assert!(
        b.text("admin-summary")
            .as_str()
            .unwrap()
            .starts_with("1 tenant ·"),
        "still the operator's view"
    );
    b.click("switch-yes");
    b.wait(
        "the tenant's view",
        "const e = document.querySelector('[data-testid=calls-used]'); return !!e && e.textContent === '46' && document.getElementById('admin-bar').hidden;",
    );
    assert_eq!(b.js(kept, vec![]), json!([[key], ADMIN]));

    // Back to the console: still signed in (this tab); signing out forgets
    // the token, and opening the console again asks for it.
    b.goto(&console);
    b.wait(
        "the console",
        "return !document.getElementById('console').hidden;",
    );
    b.click("signout");
    b.wait("the sign-in", "return !document.getElementById('login').hidden && document.getElementById('console').hidden;");
    assert_eq!(b.js(kept, vec![]), json!([[key], null]));
    b.goto(&console);
    b.wait(
        "the sign-in",
        "return !document.getElementById('login').hidden;",
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        b.js("return document.getElementById('console').hidden;", vec![]),
        json!(true)
    );
    // A tenant key in a console link opens nothing.
    b.goto(&format!("{console}#key={key}"));
    b.wait(
        "the tenant key's refusal",
        "const e = document.querySelector('[data-testid=login-error]'); return !e.hidden && e.textContent.includes('tenant key');",
    );
    assert_eq!(b.js("return window.__tollgateErrors;", vec![]), json!([]));
}

/// Five weeks of history with an unusual hour, short answers from gpt-4o,
/// API versions and countries: the page lists the unusual hour and marks
/// it on the chart (the readout names it), prices the cheaper model, and
/// breaks the usage down by version and country; on a phone nothing
/// scrolls sideways.
#[test]
fn the_page_shows_unusual_hours_ways_to_save_and_breakdowns() {
    use chrono::{TimeZone, Utc};
    use common::history::{report_hours_with, usual};
    use tollgate::clock::ManualClock;
    let now = Utc.with_ymd_and_hms(2026, 12, 3, 12, 30, 0).unwrap();
    let clock = Arc::new(ManualClock::at(now));
    let s = TestServer::start_with(|c| c.flush.checkpoint_ms = 50, clock.clone());
    s.plan("roomy", None, None, None);
    let key = s.tenant_with_key("insightful", "roomy");
    let spike = Utc.with_ymd_and_hms(2026, 12, 2, 14, 0, 0).unwrap();
    let from = Utc.with_ymd_and_hms(2026, 10, 29, 12, 0, 0).unwrap();
    // Short answers from gpt-4o, from Germany, on /v1/.
    let chat = json!({"endpoint": "/v1/chat/completions", "model": "gpt-4o", "promptTokens": 500,
                      "completionTokens": 80, "country": "DE"});
    let n = report_hours_with(
        &s,
        &key,
        &clock,
        from,
        now,
        |t| (if t == spike { usual(t) * 5 } else { usual(t) }, 0),
        &chat,
    );
    wait_until(|| common::history::requests_on_record(&s, &key) == n);
    let b = Browser::start();
    b.goto(&format!("{}#key={key}", s.url("/dashboard/api-usage")));
    b.wait(
        "the unusual hour",
        "const e = document.querySelector('[data-testid=anomalies]'); return !!e && e.dataset.count === '2';",
    );
    let listed = b.text("anomalies").as_str().unwrap().to_string();
    assert!(listed.contains("Requests ↑ 300 (usual 60)"), "{listed}");
    assert!(listed.contains("Tokens ↑ 174k (usual 34.8k)"), "{listed}");
    assert!(
        listed.contains("Dec 2") && listed.contains("14:00"),
        "{listed}"
    );
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=chart]').dataset.marks;",
            vec![]
        ),
        json!("1")
    );
    // The readout names it when the crosshair is on its bucket.
    b.js(
        "const svg = document.querySelector('[data-testid=chart] svg'); svg.focus(); \
         const i = [...document.querySelectorAll('[data-testid=chart] rect.bar-req')].findIndex((r) => r.dataset.requests === '300'); \
         const n = document.querySelectorAll('[data-testid=chart] rect.bar-req').length; \
         for (let k = n - 1; k > i; k--) svg.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowLeft', bubbles: true}));",
        vec![],
    );
    let readout = b.text("readout").as_str().unwrap().to_string();
    assert!(
        readout.contains("unusual: Requests ↑ 300 (usual 60), Tokens ↑ 174k"),
        "{readout}"
    );
    // Ways to save: gpt-4o-mini for the short answers.
    b.wait(
        "the insight",
        "return document.querySelector('[data-testid=insights]').dataset.count === '1';",
    );
    let insight = b.text("insights").as_str().unwrap().to_string();
    assert!(
        insight.contains("Short answers from gpt-4o: gpt-4o-mini would cost $"),
        "{insight}"
    );
    assert!(insight.contains(" / month"), "{insight}");
    // Breakdowns: versions from the endpoints, countries as given; no gateway, no integrations.
    let versions = b.text("versions").as_str().unwrap().to_string();
    assert!(versions.contains("v1"), "{versions}");
    let countries = b.text("countries").as_str().unwrap().to_string();
    assert!(countries.contains("DE"), "{countries}");
    assert_eq!(
        b.js(
            "return document.getElementById('integrations-card').hidden;",
            vec![]
        ),
        json!(true)
    );
    if let Ok(dir) = std::env::var("TOLLGATE_SCREENSHOTS") {
        b.js(
            "document.getElementById('anomalies-card').scrollIntoView();",
            vec![],
        );
        b.screenshot(&std::path::Path::new(&dir).join("insights.png"));
    }
    b.resize(390, 844);
    b.wait(
        "the phone layout",
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
    );
    // The charts are drawn again for the narrower boxes at once (not at
    // the next refresh, 5 s away), so their labels keep their size
    // instead of shrinking with the picture.
    b.wait_for(
        "the charts drawn for the phone's width",
        "return ['chart', 'cost-chart'].every((id) => { \
           const svg = document.querySelector('[data-testid=' + id + '] svg'); \
           return svg && Number(svg.getAttribute('viewBox').split(' ')[2]) <= 400; });",
        std::time::Duration::from_secs(3),
    );
    if let Ok(dir) = std::env::var("TOLLGATE_SCREENSHOTS") {
        b.js(
            "document.getElementById('anomalies-card').scrollIntoView();",
            vec![],
        );
        b.screenshot(&std::path::Path::new(&dir).join("insights-phone.png"));
    }
    assert_eq!(b.js("return window.__tollgateErrors;", vec![]), json!([]));
    assert_eq!(b.console_errors(), Vec::<String>::new());
    // The operator sees every tenant's unusual hours, each named.
    b.resize(1280, 1000);
    b.goto(&format!("{}#key={ADMIN}", s.url("/dashboard/api-usage")));
    // Signed in with the tenant's key, the page asks before switching.
    b.wait(
        "the question",
        "return !document.querySelector('[data-testid=switch]').hidden;",
    );
    b.click("switch-yes");
    b.wait(
        "the operator's unusual hours",
        "const e = document.querySelector('[data-testid=anomalies]'); return !!e && e.textContent.includes('insightful: Requests');",
    );
    let listed = b.text("anomalies").as_str().unwrap().to_string();
    assert!(
        listed.contains("All tenants: Requests ↑ 300 (usual 60)"),
        "{listed}"
    );
    assert_eq!(b.console_errors(), Vec::<String>::new());
}

/// The keys card picks one API key: the whole report (figures, charts,
/// tables) is then that key's usage alone (`keyId`), and "every key"
/// brings the tenant's back.
#[test]
fn the_dashboard_shows_one_keys_usage_when_picked() {
    let s = TestServer::start();
    s.plan("open", None, None, None);
    let a = s.tenant_with_key("shop", "open");
    let r = s.admin(
        "POST",
        "/api/admin/tenants/shop/keys",
        Some(json!({"name": "batch"})),
    );
    assert_eq!(r.status(), 201);
    let b: Value = r.json().unwrap();
    let (b_id, b_secret) = (b["id"].as_str().unwrap(), b["key"].as_str().unwrap());
    for _ in 0..3 {
        assert_eq!(
            s.tenant(&a, "POST", "/api/v1/authorize", None).status(),
            200
        );
    }
    let records = json!([{"endpoint": "/v1/chat"}, {"endpoint": "/v1/chat"}]);
    assert_eq!(
        s.tenant(b_secret, "POST", "/api/v1/usage", Some(records))
            .status(),
        202
    );
    wait_until(|| {
        s.tenant(&a, "GET", "/api/billing/api-usage?range=day", None)
            .json::<Value>()
            .unwrap()["summary"]["totalRequests"]
            == 5
    });
    let br = Browser::start();
    br.goto(&format!("{}#key={a}", s.url("/dashboard/api-usage")));
    let total = |n: u64| {
        format!("const e = document.querySelector('[data-testid=total-requests]'); return !!e && e.textContent === '{n}';")
    };
    br.wait("every key's requests", &total(5));
    br.wait(
        "the picker lists the key",
        &format!("return [...document.querySelectorAll('[data-testid=key-picker] option')].some(o => o.value === '{b_id}' && o.textContent.startsWith('batch'));"),
    );
    br.js(
        "const p = document.querySelector('[data-testid=key-picker]'); p.value = arguments[0]; p.dispatchEvent(new Event('change'));",
        vec![json!(b_id)],
    );
    br.wait("the batch key's requests alone", &total(2));
    br.js(
        "const p = document.querySelector('[data-testid=key-picker]'); p.value = ''; p.dispatchEvent(new Event('change'));",
        vec![],
    );
    br.wait("every key's again", &total(5));
}

/// Issue 41, item 2: editing a plan changes only what the operator
/// changed (the form once sent `rateLimit: null` for a per-minute limit and
/// reset every burst to twice the rate), and every field of a plan is in
/// the form with its label and unit; an error shows beside its form.
#[test]
fn the_console_changes_only_what_was_edited() {
    let s = TestServer::start();
    s.admin(
        "POST",
        "/api/admin/plans",
        Some(json!({"id": "minute", "name": "Per minute", "monthlyCalls": 5000, "monthlyTokens": 70000,
                    "rateLimit": {"requests": 60, "perSeconds": 60, "burst": 10},
                    "ingestRate": {"records": 500, "perSeconds": 1, "burst": 20000},
                    "reserveTokens": 800, "reservationTtlSeconds": 120, "reserveUsd": 0.05, "priceUsdMonthly": 19})),
    );
    let before: Value = s
        .admin("GET", "/api/admin/plans/minute", None)
        .json()
        .unwrap();
    let b = Browser::start();
    b.goto(&format!("{}#key={ADMIN}", s.url("/dashboard/console")));
    b.wait(
        "the console",
        "return !!document.querySelector('[data-testid=plans] tr[data-plan=minute]');",
    );
    b.click("edit-plan-minute");
    // Every field shows the plan as it is, each with a visible label.
    for (testid, value) in [
        ("plan-rate", "60"),
        ("plan-per", "60"),
        ("plan-burst", "10"),
        ("plan-ingest", "500"),
        ("plan-ingest-burst", "20000"),
        ("plan-reserve-tokens", "800"),
        ("plan-reservation-ttl", "120"),
        ("plan-reserve-usd", "0.05"),
        ("plan-price", "19"),
    ] {
        assert_eq!(
            b.js(
                "const e = document.querySelector('[data-testid=\"' + arguments[0] + '\"]'); \
                 return [e.value, e.closest('label').querySelector('span').textContent];",
                vec![json!(testid)]
            )[0],
            json!(value),
            "{testid}"
        );
    }
    fill(&b, "plan-price", "29");
    b.click("save-plan");
    wait_until(|| {
        s.admin("GET", "/api/admin/plans/minute", None)
            .json::<Value>()
            .unwrap()["priceUsdMonthly"]
            == 29.0
    });
    let after: Value = s
        .admin("GET", "/api/admin/plans/minute", None)
        .json()
        .unwrap();
    let mut expected = before.clone();
    expected["priceUsdMonthly"] = json!(29.0);
    assert_eq!(after, expected, "only the price changed");
    // The burst alone.
    b.wait(
        "the form reset",
        "return document.querySelector('[data-testid=plan-id]').disabled === false;",
    );
    b.click("edit-plan-minute");
    fill(&b, "plan-burst", "25");
    b.click("save-plan");
    wait_until(|| {
        s.admin("GET", "/api/admin/plans/minute", None)
            .json::<Value>()
            .unwrap()["rateLimit"]["burst"]
            == 25
    });
    let after: Value = s
        .admin("GET", "/api/admin/plans/minute", None)
        .json()
        .unwrap();
    expected["rateLimit"]["burst"] = json!(25);
    assert_eq!(after, expected, "only the burst changed");
    // A refused edit: the API's error beside the plan form.
    b.wait(
        "the form reset",
        "return document.querySelector('[data-testid=plan-id]').disabled === false;",
    );
    b.click("edit-plan-minute");
    fill(&b, "plan-reservation-ttl", "999999");
    b.click("save-plan");
    b.wait(
        "the error beside the form",
        "const e = document.querySelector('[data-testid=plan-form-error]'); return !e.hidden && e.textContent.includes('invalid_request');",
    );
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=console-error]').hidden;",
            vec![]
        ),
        json!(true)
    );
    // (The browser logs the refused request itself; nothing else.)
    let errors = b.console_errors();
    assert!(errors.iter().all(|e| e.contains("422")), "{errors:?}");
}

/// Issue 41, item 2: 10,000 tenants in pages of 50, with a search.
#[test]
fn the_console_searches_and_pages_ten_thousand_tenants() {
    let s = TestServer::start();
    s.plan("many", None, None, None);
    for i in 0..10_000 {
        let r = s.admin(
            "POST",
            "/api/admin/tenants",
            Some(
                json!({"id": format!("t-{i:05}"), "name": format!("Tenant {i}"), "planId": "many"}),
            ),
        );
        assert_eq!(r.status(), 201);
    }
    let b = Browser::start();
    b.goto(&format!("{}#key={ADMIN}", s.url("/dashboard/console")));
    b.wait(
        "the first page",
        "return document.querySelectorAll('[data-testid=tenants] tr[data-tenant]').length === 50;",
    );
    assert!(
        b.text("tenant-count")
            .as_str()
            .unwrap()
            .starts_with("10,000 tenants"),
        "{}",
        b.text("tenant-count")
    );
    assert_eq!(b.text("page-info"), json!("1–50 of 10,000"));
    b.click("sort-id");
    b.wait(
        "by id",
        "return document.querySelector('[data-testid=tenants] tr[data-tenant]').dataset.tenant === 't-00000';",
    );
    b.click("page-next");
    b.wait(
        "the second page",
        "return document.querySelector('[data-testid=tenants] tr[data-tenant]').dataset.tenant === 't-00050';",
    );
    assert_eq!(b.text("page-info"), json!("51–100 of 10,000"));
    fill(&b, "tenant-search", "Tenant 9999");
    b.wait(
        "one found",
        "const rows = document.querySelectorAll('[data-testid=tenants] tr[data-tenant]'); return rows.length === 1 && rows[0].dataset.tenant === 't-09999';",
    );
    assert_eq!(b.text("page-info"), json!("1–1 of 1"));
    fill(&b, "tenant-search", "t-0012");
    b.wait(
        "ten found",
        "return document.querySelectorAll('[data-testid=tenants] tr[data-tenant]').length === 10;",
    );
    assert_eq!(b.console_errors(), Vec::<String>::new());
    // A tenant's link opens the operator's view of it on the dashboard.
    b.js(
        "document.querySelector('[data-testid=\"dashboard-of-t-00123\"]').click();",
        vec![],
    );
    b.wait(
        "the tenant's usage",
        "const e = document.querySelector('[data-testid=tenant-name]'); return !!e && e.textContent === 'Tenant 123';",
    );
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=tenant-picker]').value;",
            vec![]
        ),
        json!("t-00123")
    );
}

/// Issue 41, item 3 (in part): a server that cannot be reached is said in a
/// banner at the top of the page, with how old the figures shown are (the
/// footer alone once said "Updated failed (Failed to fetch), retrying"),
/// and times of day are UTC like the rest of the page.
#[test]
fn a_server_out_of_reach_is_said_in_a_banner() {
    let mut s = TestServer::start();
    s.plan("banner", Some(1000), None, None);
    let key = s.tenant_with_key("bannered", "banner");
    let b = Browser::start();
    b.goto(&format!("{}#key={key}", s.url("/dashboard/api-usage")));
    b.wait(
        "the first figures",
        "return /^\\d\\d:\\d\\d:\\d\\d UTC$/.test(document.querySelector('[data-testid=updated]').textContent);",
    );
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=offline]').hidden;",
            vec![]
        ),
        json!(true)
    );
    let shown = b.text("updated").as_str().unwrap().to_string();
    s.stop();
    b.wait_for(
        "the banner",
        "return !document.querySelector('[data-testid=offline]').hidden;",
        std::time::Duration::from_secs(15),
    );
    let banner = b.text("offline").as_str().unwrap().to_string();
    assert!(
        banner.starts_with("Tollgate cannot be reached")
            && banner.contains(&format!("The figures below are from {shown}."))
            && banner.ends_with("Retrying every 5 s."),
        "{banner}"
    );
}

/// A tenant without usage is shown how to send its first record (the
/// snippet works: its record is what then appears), and nothing on the
/// page claims anything about usage it has not seen.
#[test]
fn a_new_tenant_is_shown_how_to_send_its_first_record() {
    let s = TestServer::start();
    let key = s.tenant_with_key("fresh", "professional");
    let b = Browser::start();
    b.goto(&format!("{}#key={key}", s.url("/dashboard/api-usage")));
    b.wait(
        "the first-request card",
        "const e = document.querySelector('[data-testid=first-request]'); return !!e && !e.hidden;",
    );
    let code = b.text("first-request-code").as_str().unwrap().to_string();
    assert!(
        code.contains(&format!("curl -X POST {}", s.url("/api/v1/usage"))),
        "{code}"
    );
    assert_eq!(b.text("anomalies"), json!("No traffic in this range yet."));
    assert_eq!(
        b.text("insights"),
        json!("Advice appears once there is usage to learn from.")
    );
    assert_eq!(
        b.text("cost-chart"),
        json!("Spend appears here once there is usage.")
    );
    let page = b
        .js("return document.body.textContent;", vec![])
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        !page.contains("efficient") && !page.contains("nothing unusual"),
        "{page}"
    );
    // The snippet's record, sent as it stands.
    let body = code.split("-d '").nth(1).unwrap().trim_end_matches('\'');
    let record: Value = serde_json::from_str(body).unwrap();
    let r = s.tenant(&key, "POST", "/api/v1/usage", Some(record));
    assert_eq!(r.status(), 202);
    b.wait(
        "the first record",
        "return document.querySelector('[data-testid=first-request]').hidden && document.querySelector('[data-testid=total-requests]').textContent === '1';",
    );
    assert!(b.text("models").as_str().unwrap().contains("gpt-4o"));
    assert_eq!(b.js("return window.__tollgateErrors;", vec![]), json!([]));
}
