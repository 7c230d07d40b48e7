//! The admin API's calls the process tests make over and over.

use reqwest::blocking::Client;
use serde_json::{json, Value};

/// Makes tenant `tenant` on plan `plan_id` and a key for it, through the
/// admin API at `base` (with `admin`, the admin token): the key.
pub fn add_tenant(c: &Client, base: &str, admin: &str, plan_id: &str, tenant: &str) -> String {
    let post = |path: &str, body: Value| {
        c.post(format!("{base}{path}"))
            .bearer_auth(admin)
            .json(&body)
            .send()
            .unwrap()
    };
    let r = post(
        "/api/admin/tenants",
        json!({"id": tenant, "planId": plan_id}),
    );
    assert_eq!(r.status(), 201, "{:?}", r.text());
    post(&format!("/api/admin/tenants/{tenant}/keys"), json!({}))
        .json::<Value>()
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}
