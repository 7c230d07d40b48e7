//! `/dashboard/api-usage`: the page tenants and operators look at, compiled
//! into the binary (HTML, CSS, JS; charts are SVG drawn by the script, no
//! library, nothing fetched from elsewhere). It reads the same JSON API as
//! any client; a tenant key is kept in the browser's localStorage, the admin
//! token only in the tab's sessionStorage (common.js). `/docs`
//! renders `/api/openapi.json` the same way; `/` and `/dashboard` lead to
//! the page. `/dashboard/console` is the operator's: plans, tenants and
//! keys, every action through the admin API.

use crate::http::wire::route::get;
use actix_web::http::header;
use actix_web::{HttpResponse, Route};

const INDEX: &str = include_str!("assets/index.html");
const COMMON_JS: &str = include_str!("assets/common.js");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const CONSOLE: &str = include_str!("assets/console.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const DOCS: &str = include_str!("assets/docs.html");
const DOCS_JS: &str = include_str!("assets/docs.js");
const DOCS_CSS: &str = include_str!("assets/docs.css");
/// docs/API.md: `/docs` opens with its errors, authentication and
/// rate-limit headers sections (written once, there).
const API_MD: &str = include_str!("../../../docs/API.md");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        // For browsers that predate CSP's frame-ancestors.
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

#[utoipa::path(
    get, path = "/dashboard/api-usage", tag = "dashboard",
    responses((status = 200, description = "the usage dashboard (HTML); the key goes in the fragment, `#key=...`", content_type = "text/html"))
)]
async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

#[utoipa::path(
    get, path = "/dashboard/console", tag = "dashboard",
    responses((status = 200, description = "the operator console (HTML): plans, tenants and keys through the admin API; the admin token goes in the page or after `#key=`", content_type = "text/html"))
)]
pub(crate) async fn console() -> HttpResponse {
    asset("text/html; charset=utf-8", CONSOLE)
}

async fn console_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

/// `/` and `/dashboard` lead to the page (a browser keeps the URL's
/// `#key=...` fragment across the redirect).
fn to_page() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/dashboard/api-usage"))
        .finish()
}

#[utoipa::path(
    get, path = "/", tag = "dashboard",
    responses((status = 302, description = "to /dashboard/api-usage"))
)]
pub(crate) async fn root() -> HttpResponse {
    to_page()
}

#[utoipa::path(
    get, path = "/dashboard", tag = "dashboard",
    responses((status = 302, description = "to /dashboard/api-usage"))
)]
pub(crate) async fn dashboard_root() -> HttpResponse {
    to_page()
}

#[utoipa::path(
    get, path = "/docs", tag = "dashboard",
    responses((status = 200, description = "a browsable reference of /api/openapi.json (HTML)", content_type = "text/html"))
)]
pub(crate) async fn docs() -> HttpResponse {
    asset("text/html; charset=utf-8", DOCS)
}

async fn docs_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", DOCS_JS)
}

async fn docs_css() -> HttpResponse {
    asset("text/css; charset=utf-8", DOCS_CSS)
}

#[utoipa::path(
    get, path = "/docs/API.md", tag = "dashboard",
    responses((status = 200, description = "the API's guide in Markdown (docs/API.md), which `/docs` opens with", content_type = "text/markdown"))
)]
pub(crate) async fn api_md() -> HttpResponse {
    asset("text/markdown; charset=utf-8", API_MD)
}

async fn common_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", COMMON_JS)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// The page's routes, as (path, route) pairs for `http/` to register
/// (anything else under `/dashboard` is its JSON 404). The page knows
/// nothing of `http/`.
pub(crate) fn pages() -> Vec<(&'static str, Route)> {
    vec![
        ("/", get().to(root)),
        ("/dashboard", get().to(dashboard_root)),
        ("/dashboard/api-usage", get().to(index)),
        ("/dashboard/console", get().to(console)),
        ("/dashboard/assets/console.js", get().to(console_js)),
        ("/dashboard/assets/common.js", get().to(common_js)),
        ("/dashboard/assets/app.js", get().to(app_js)),
        ("/dashboard/assets/style.css", get().to(style_css)),
        ("/docs", get().to(docs)),
        ("/docs/API.md", get().to(api_md)),
        ("/dashboard/assets/docs.js", get().to(docs_js)),
        ("/dashboard/assets/docs.css", get().to(docs_css)),
    ]
}
