//! `serve --demo` as a newcomer meets it: the real binary seeds its
//! tenants, and the dashboard in a real headless Chromium shows the two
//! incidents the README promises, where it says, and nothing else unusual.

#[path = "common/binary.rs"]
mod binary;
mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use chrono::{Datelike, Duration, TimeZone, Utc};
use common::ADMIN;
use serde_json::json;
use webdriver::Browser;

/// The key the demo printed for `tenant`.
fn key_of(p: &binary::Proc, tenant: &str) -> String {
    p.stdout
        .iter()
        .find(|l| l.trim_start().starts_with(&format!("{tenant} ")))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no key printed for {tenant}: {:?}", p.stdout))
        .to_string()
}

/// The hour `days_ago` days back at `hour`:00 UTC as the dashboard labels
/// it ("Dec 5 14:00 UTC").
fn label(days_ago: i64, hour: u32) -> String {
    let day = Utc::now() - Duration::days(days_ago);
    format!("{} {hour:02}:00 UTC", day.format("%b %-d"))
}

/// A browser of its own (a fresh profile: no key kept from another
/// tenant) on `key`'s dashboard, once its unusual hours are listed.
fn dashboard(p: &binary::Proc, key: &str) -> Browser {
    let b = Browser::start();
    b.goto(&format!("{}#key={key}", p.url("/dashboard/api-usage")));
    b.wait(
        "the unusual hours",
        "const e = document.querySelector('[data-testid=anomalies]'); \
         return !!e && e.dataset.count !== undefined;",
    );
    b
}

/// The unusual hours `b`'s page lists, one line per hour.
fn unusual(b: &Browser) -> Vec<String> {
    let rows = b.js(
        "return [...document.querySelectorAll('[data-testid=anomalies] li.anomaly')] \
           .map((li) => li.innerText.replace(/\\s+/g, ' ').trim());",
        vec![],
    );
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// The README's story: "the professional tenant's upstream failed two days
/// ago at 14:00 and the enterprise tenant's traffic tripled yesterday at
/// 10:00: both show as unusual hours" - on the real clock, whose fraction
/// of a second once hid them both. The week's other hours of those tenants
/// are ordinary, and the tenants near and over their quota show nothing
/// unusual before their quota runs out.
#[test]
fn the_demo_shows_both_incidents_where_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let p = binary::start(dir.path(), &["--demo"], &[], Some(ADMIN));
    let b = dashboard(&p, &key_of(&p, "demo-professional"));
    let pro = unusual(&b);
    assert_eq!(pro.len(), 1, "one unusual hour: {pro:?}");
    assert!(pro[0].starts_with(&label(2, 14)), "{pro:?}");
    assert!(pro[0].contains("Error rate ↑"), "{pro:?}");
    // "Earlier months" offers the months since the tenant was created (its
    // history's start), none before.
    let created: serde_json::Value = reqwest::blocking::Client::new()
        .get(p.url("/api/admin/tenants/demo-professional"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(created["createdAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let now = Utc::now();
    let want: Vec<String> = (1..=12)
        .map(|i| {
            let m = now.year() * 12 + now.month0() as i32 - i;
            let start = Utc
                .with_ymd_and_hms(m.div_euclid(12), m.rem_euclid(12) as u32 + 1, 1, 0, 0, 0)
                .unwrap();
            let end = Utc
                .with_ymd_and_hms(
                    (m + 1).div_euclid(12),
                    (m + 1).rem_euclid(12) as u32 + 1,
                    1,
                    0,
                    0,
                    0,
                )
                .unwrap();
            (start, end)
        })
        .take_while(|(_, end)| *end > created)
        .map(|(start, _)| start.format("%Y-%m-%dT00:00:00.000Z").to_string())
        .collect();
    assert!(!want.is_empty());
    b.wait(
        "the earlier months",
        "return document.querySelector('[data-testid=period-picker]').options[0].text === 'Earlier months…';",
    );
    assert_eq!(
        b.js(
            "return [...document.querySelector('[data-testid=period-picker]').options].slice(1).map((o) => o.value);",
            vec![]
        ),
        json!(want)
    );

    assert_eq!(b.console_errors(), Vec::<String>::new());

    let b = dashboard(&p, &key_of(&p, "demo-enterprise"));
    let ent = unusual(&b);
    assert_eq!(ent.len(), 1, "one unusual hour: {ent:?}");
    assert!(ent[0].starts_with(&label(1, 10)), "{ent:?}");
    assert!(ent[0].contains("Requests ↑"), "{ent:?}");

    // The chart marks each on its bucket.
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=chart]').dataset.marks;",
            vec![]
        ),
        json!("1")
    );

    assert_eq!(b.console_errors(), Vec::<String>::new());

    // A compact page: the first screen and one tab, not every card at
    // once (a month of the demo's data once made 3,927 px on a desktop and
    // 6,037 on a phone; now about 1,950 and 3,000).
    let height = || {
        b.js("return document.documentElement.scrollHeight;", vec![])
            .as_u64()
            .unwrap()
    };
    b.resize(1280, 900);
    b.wait("the desktop layout", "return window.innerWidth === 1280;");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let desktop = height();
    b.resize(375, 800);
    b.wait("the phone layout", "return window.innerWidth === 375;");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let phone = height();
    assert!(
        desktop <= 2_300 && phone <= 3_500,
        "{desktop} px, {phone} px on a phone"
    );
    b.resize(1280, 900);
    // TOLLGATE_SCREENSHOTS=dir: the enterprise tenant's page, to look at.
    if let Ok(dir) = std::env::var("TOLLGATE_SCREENSHOTS") {
        let dir = std::path::Path::new(&dir);
        b.screenshot(&dir.join("demo-enterprise.png"));
        b.js(
            "document.querySelector('[data-testid=chart]').scrollIntoView();",
            vec![],
        );
        b.screenshot(&dir.join("demo-enterprise-traffic.png"));
        b.js("document.querySelector('[data-testid=tab-plan]').click(); window.scrollTo(0, document.body.scrollHeight);", vec![]);
        b.screenshot(&dir.join("demo-enterprise-plan.png"));
        b.resize(375, 800);
        b.js("window.scrollTo(0, 0);", vec![]);
        b.screenshot(&dir.join("demo-enterprise-phone.png"));
        b.js(
            "document.querySelector('[data-testid=models]').scrollIntoView();",
            vec![],
        );
        b.screenshot(&dir.join("demo-enterprise-phone-models.png"));
    }

    // The tenant near its quota: nothing unusual this week.
    let b = dashboard(&p, &key_of(&p, "demo-starter"));
    assert_eq!(unusual(&b), Vec::<String>::new());
}
