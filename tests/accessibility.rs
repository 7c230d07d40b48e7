//! WCAG 2.1 AA, checked by axe-core (from npm, installed by scripts/test)
//! in headless Chromium over every page - the tenant's dashboard, the
//! operator's view, the console, the API reference and the sign-in
//! pages - in light and dark, on a desktop and a phone: any violation
//! fails, named with the elements it was found on.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use common::*;
use serde_json::{json, Value};
use webdriver::Browser;

/// axe-core's script: `TOLLGATE_AXE`, else the copy scripts/test installs.
fn axe_source() -> String {
    let path = std::env::var("TOLLGATE_AXE").unwrap_or_else(|_| {
        format!(
            "{}/tests/a11y/node_modules/axe-core/axe.min.js",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("axe-core is not at {path} ({e}): scripts/test installs it (npm ci in tests/a11y)")
    })
}

/// The violations axe finds on the page as it stands now.
fn violations(b: &Browser, axe: &str) -> Vec<Value> {
    b.js(&format!("{axe}\n;window.__axe = null; axe.run(document, {{runOnly: {{type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}}, resultTypes: ['violations']}}).then(r => window.__axe = r.violations, e => window.__axe = [{{id: 'axe-error', help: String(e), nodes: []}}]); return true;"), vec![]);
    b.wait("axe's result", "return window.__axe !== null;");
    b.js("return window.__axe;", vec![])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn describe(page: &str, v: &[Value]) -> String {
    v.iter()
        .map(|x| {
            let nodes: Vec<String> = x["nodes"]
                .as_array()
                .map(|n| {
                    n.iter()
                        .take(4)
                        .map(|n| {
                            format!(
                                "{} ({})",
                                n["target"],
                                n["failureSummary"]
                                    .as_str()
                                    .unwrap_or("")
                                    .replace('\n', " ")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("{page}: {} - {} [{}]", x["id"], x["help"], nodes.join("; "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_page_has_no_wcag_aa_violation_in_either_theme_or_size() {
    let axe = axe_source();
    let s = TestServer::start();
    // A tenant near its quota and its token quota (the warning colours),
    // with costs, failures, end users, a bot and a named limit: every mark
    // drawn.
    let key = seed_shop(&s, Some(10_000));
    let admin = ADMIN;
    let b = Browser::start();
    let pages: Vec<(&str, String, &str)> = vec![
        ("dashboard sign-in", s.url("/dashboard/api-usage"), "return !!document.getElementById('key-input') && document.readyState === 'complete';"),
        ("tenant dashboard", format!("{}#key={key}", s.url("/dashboard/api-usage")), "const e = document.querySelector('[data-testid=total-requests]'); return !!e && e.textContent === '46';"),
        ("operator view", format!("{}#key={admin}", s.url("/dashboard/api-usage")), "const e = document.querySelector('[data-testid=total-requests]'); return !!e && e.textContent !== '' && e.textContent !== '—';"),
        ("console sign-in", s.url("/dashboard/console"), "return document.readyState === 'complete';"),
        ("console", format!("{}#key={admin}", s.url("/dashboard/console")), "return document.querySelectorAll('[data-testid=tenants] tr').length > 1;"),
        ("API reference", s.url("/docs"), "return document.querySelectorAll('h3, h2').length > 5;"),
    ];
    let mut found = Vec::new();
    for (size, (w, h)) in [("desktop", (1280, 900)), ("phone", (375, 800))] {
        b.resize(w, h);
        for theme in ["light", "dark"] {
            b.cdp(
                "Emulation.setEmulatedMedia",
                json!({"features": [{"name": "prefers-color-scheme", "value": theme}]}),
            );
            for (name, url, ready) in &pages {
                b.goto("about:blank");
                b.goto(url);
                b.wait(name, ready);
                std::thread::sleep(std::time::Duration::from_millis(300));
                // Each page says what it is in one top heading.
                let h1 = b.js(
                    "return [...document.querySelectorAll('h1')].filter(h => h.offsetParent !== null && h.textContent.trim() !== '').length;",
                    vec![],
                );
                if h1 != json!(1) && !name.contains("API reference") {
                    found.push(format!(
                        "{name}, {theme}, {size}: {h1} visible non-empty <h1> (one expected)"
                    ));
                }
                let v = violations(&b, &axe);
                if !v.is_empty() {
                    found.push(describe(&format!("{name}, {theme}, {size}"), &v));
                }
                // The console's limits editor, open with a row.
                if *name == "console" {
                    b.click("limits-shop");
                    b.wait("the limits editor", "return !document.getElementById('limits-card').hidden && !!document.querySelector('[data-testid=limits-rows] tr');");
                    b.click("limits-add");
                    let v = violations(&b, &axe);
                    if !v.is_empty() {
                        found.push(describe(
                            &format!("{name} (limits editor), {theme}, {size}"),
                            &v,
                        ));
                    }
                }
                // The dashboard's other tabs, each shown and checked.
                let tabs = b.js(
                    "return [...document.querySelectorAll('[role=tab]')].filter((t) => t.offsetParent !== null).map((t) => t.dataset.testid);",
                    vec![],
                );
                for tab in tabs.as_array().unwrap().iter().skip(1) {
                    let tab = tab.as_str().unwrap();
                    b.click(tab);
                    b.wait(
                        tab,
                        &format!("return document.querySelector('[data-testid={tab}]').getAttribute('aria-selected') === 'true';"),
                    );
                    let v = violations(&b, &axe);
                    if !v.is_empty() {
                        found.push(describe(&format!("{name} ({tab}), {theme}, {size}"), &v));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "\n{}", found.join("\n"));
}
