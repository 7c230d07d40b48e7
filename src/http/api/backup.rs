//! `POST /api/admin/backup`: a consistent copy of the embedded store,
//! made while Tollgate serves, into `<data dir>/backups/<time>/db`
//! ([`crate::store::Store::backup`]). `tollgate restore` puts one back.

use actix_web::{web, HttpResponse};

use crate::http::wire::error::{blocking, ApiError};
use crate::http::wire::extract::Admin;
use crate::http::AppState;

/// Where a backup went and what it took.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackupAnswer {
    /// The backup's directory, on the server (give it to `tollgate restore`).
    pub path: String,
    pub bytes: u64,
    /// How long writes waited while the store was copied.
    pub took_ms: u64,
}

#[utoipa::path(
    post, path = "/api/admin/backup", tag = "admin", security(("adminToken" = [])),
    responses(
        (status = 201, description = "a consistent copy of the store, written on the server", body = BackupAnswer),
        (status = 401, description = "no or wrong admin token", body = crate::http::wire::error::ErrorBody),
        (status = 503, description = "the store cannot be copied now (or is backed up with its engine's own tools: PostgreSQL)", body = crate::http::wire::error::ErrorBody)
    )
)]
pub(crate) async fn backup(st: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let store = st.metering.registry.store().clone();
    let dir = st
        .backups_dir
        .join(chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string());
    let answer = blocking(move || {
        let started = std::time::Instant::now();
        let bytes = store.backup(&dir.join("db")).map_err(ApiError::from)?;
        Ok(BackupAnswer {
            path: dir.display().to_string(),
            bytes,
            took_ms: started.elapsed().as_millis() as u64,
        })
    })
    .await?;
    tracing::info!(path = %answer.path, bytes = answer.bytes, took_ms = answer.took_ms, "store backed up");
    Ok(HttpResponse::Created().json(answer))
}
