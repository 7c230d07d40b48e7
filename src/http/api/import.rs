//! `POST /api/admin/tenants/{id}/import`: a tenant's usage history, in
//! the export's own formats, written once ([`crate::usage::import`]).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::http::wire::error::ApiError;
use crate::http::wire::extract::Admin;
use crate::http::AppState;
use crate::usage::import::{self, Format, Imported, LineError};

/// The largest file the route takes; `tollgate import` reads any size.
pub(crate) const MAX_IMPORT_BYTES: usize = 128 << 20;
/// How long a file may take to arrive.
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// What an import answers: what it wrote, or every line it could not read
/// (and then it wrote nothing).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ImportAnswer {
    pub imported: u64,
    pub duplicates: u64,
    /// `[{line, error}]`, the first 100.
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<LineError>,
}

#[utoipa::path(
    post, path = "/api/admin/tenants/{id}/import", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    request_body(content((String = "application/x-ndjson"), (String = "text/csv")), description = "records in the export's format (GET /api/billing/api-usage/export): NDJSON, or CSV with its header row; up to 128 MiB"),
    responses((status = 200, description = "imported: records written, and records imported before (not counted again)", body = ImportAnswer), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody), (status = 413, description = "file over 128 MiB: use tollgate import", body = crate::http::wire::error::ErrorBody), (status = 415, description = "neither NDJSON nor CSV", body = crate::http::wire::error::ErrorBody), (status = 422, description = "lines that are not records, by line number; nothing was written", body = ImportAnswer))
)]
pub(crate) async fn import(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let tenant = st
        .metering
        .registry
        .tenant_state(&id)
        .ok_or_else(|| ApiError::not_found(format!("tenant '{id}' not found")))?;
    let mime = crate::http::wire::extract::mime(&req).unwrap_or_default();
    let format = match mime.to_ascii_lowercase().as_str() {
        "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines" => Format::Ndjson,
        "text/csv" => Format::Csv,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the export's format: Content-Type: application/x-ndjson or text/csv",
            ))
        }
    };
    let declared = crate::http::wire::extract::declared_length(&req);
    let body = crate::http::wire::extract::read_body(
        payload.into_inner(),
        declared,
        MAX_IMPORT_BYTES,
        UPLOAD_TIMEOUT.max(st.body_timeout),
    )
    .await?;
    let text = String::from_utf8(body).map_err(|e| {
        ApiError::invalid(format!(
            "the file is not UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let now = st.metering.clock.now_nanos();
    let (oldest_ms, newest_ms) = import::window(now, st.raw_days);
    let store = st.metering.registry.store().clone();
    let prices = st.metering.prices.clone();
    // Parsed and written on the blocking pool: a file is large.
    let done =
        web::block(
            move || match import::parse(&text, format, oldest_ms, newest_ms, &prices) {
                Ok(records) => import::write(store.as_ref(), &tenant, records, now).map(Ok),
                Err(errors) => Ok(Err(errors)),
            },
        )
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is stopping",
            )
        })?;
    match done {
        Ok(Ok(Imported { imported, duplicates })) => Ok(HttpResponse::Ok().json(ImportAnswer {
            imported,
            duplicates,
            errors: Vec::new(),
        })),
        Ok(Err(errors)) => Ok(HttpResponse::UnprocessableEntity().json(ImportAnswer {
            imported: 0,
            duplicates: 0,
            errors,
        })),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the store failed during the import ({e}); import the file again: what was written is not counted twice"),
        )
        .retry_after(5)),
    }
}
