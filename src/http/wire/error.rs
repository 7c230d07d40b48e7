//! [`ApiError`]: every error the API answers, as the JSON body of SPEC §5:
//! `{"error": "...", "code": "...", "status": N}` plus, for 429s, the limit's state.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::metering::{Refusal, Refused};
use crate::registry::RegistryError;
use crate::store::StoreError;

/// Every error: SPEC §5's body (some carry more fields, e.g. a 429's limit state).
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// What went wrong, for programs (`quota_exceeded`, `invalid_api_key`, ...).
    pub code: String,
    /// The HTTP status, repeated.
    pub status: u16,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra body fields (429s carry limit, remaining, resetAt, retryAfterSeconds).
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header (and `retryAfterSeconds` in the body).
    pub(crate) retry_after: Option<u64>,
    /// Why metering refused the request, when that is what this error says
    /// (the other edges map it to their own wire).
    pub refusal: Option<Refusal>,
}

/// The HTTP status of a refusal ([`Refusal::status`]).
fn http_status(r: Refusal) -> StatusCode {
    StatusCode::from_u16(r.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Put on a response by each of Tollgate's own error answers: what it
/// said (a gateway route rewrites it in its clients' dialect).
#[derive(Clone, Debug)]
pub(crate) struct Said {
    pub code: &'static str,
    pub message: String,
    /// Metering's refusal, when that is what it was (not a bad request
    /// or an upstream that failed).
    pub refusal: Option<Refusal>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
            refusal: None,
        }
    }

    /// Metering's refusal `r`, with its status and code.
    pub fn refused(r: Refusal, message: impl Into<String>) -> ApiError {
        ApiError {
            refusal: Some(r),
            ..ApiError::new(http_status(r), r.code(), message)
        }
    }

    /// Tells the client to retry after `secs` (header and body).
    pub(crate) fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self.with("retryAfterSeconds", secs)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub(crate) fn bad_json(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub(crate) fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The JSON body: `error`, `code`, `status` and the extra fields.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), self.message.clone().into());
        body.insert("code".into(), self.code.into());
        body.insert("status".into(), self.status.as_u16().into());
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    /// No thread was free for the work (the blocking pool is shut down or full).
    pub fn busy() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the server is busy; try again",
        )
    }
}

/// Runs store work on actix's blocking pool, never on a worker's event loop.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    actix_web::web::block(work)
        .await
        .map_err(|_| ApiError::busy())?
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header(("retry-after", secs.to_string()));
        }
        let mut res = res.json(self.body());
        // A gateway route may answer it in its clients' dialect.
        res.extensions_mut().insert(Said {
            code: self.code,
            message: self.message.clone(),
            refusal: self.refusal,
        });
        res
    }
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        ApiError {
            extra: r.fields(),
            retry_after: r.retry_after,
            ..ApiError::refused(r.refusal, r.message)
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        match e {
            RegistryError::NotFound(m) => ApiError::not_found(m),
            RegistryError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            RegistryError::Invalid(m) => ApiError::invalid(m.to_string()),
            RegistryError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store could not complete the request; try again",
        )
    }
}

/// The JSON 404 for every unknown route.
pub(crate) async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such route"))
}

/// The JSON 405 for a known route and a method it does not serve.
pub(crate) async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not serve that method",
    ))
}
