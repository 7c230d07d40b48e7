//! Tenants and their API keys (as lists show them, and as the store keeps them).

use chrono::{DateTime, Utc};

use super::{valid_id, ModelError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantStatus {
    Active,
    Suspended,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub plan_id: String,
    pub status: TenantStatus,
    pub created_at: DateTime<Utc>,
}

/// An API key as lists show it: never the secret.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first 8 characters of the secret.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What the store keeps of a key: its public fields and the SHA-256 of the secret.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredKey {
    pub key: ApiKey,
    pub hash: [u8; 32],
}

impl Tenant {
    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        if !valid_id(&self.id) {
            return Err(ModelError::BadId("tenant id"));
        }
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(ModelError::Invalid("name must be 1 to 128 bytes".into()));
        }
        if self.name.chars().any(char::is_control) {
            return Err(ModelError::Invalid(
                "name must not contain control characters (CR, LF, NUL, ESC, ...)".into(),
            ));
        }
        Ok(())
    }
}
