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
    /// Limits of SPEC §12 of this tenant's own: each replaces its plan's
    /// limit of the same name (or adds one).
    pub limits: Vec<super::Limit>,
    /// The day of the month its billing month starts (1 to 28; `None`: the 1st).
    pub billing_day: Option<u8>,
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
    /// From then on the key is refused (`key_expired`); `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the key was last used, to the minute (kept apart from the
    /// catalog: `None` from the catalog's own reads).
    pub last_used_at: Option<DateTime<Utc>>,
    /// The key's own limits (scope `key`: this key's use), replacing its
    /// plan's and tenant's `key` limits of the same name.
    pub limits: Vec<super::Limit>,
}

/// What the store keeps of a key: its public fields and the SHA-256 of the secret.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredKey {
    pub key: ApiKey,
    pub hash: [u8; 32],
    /// The secret the last rotation replaced, still working until then.
    pub previous: Option<PreviousSecret>,
}

/// A rotated key's old secret: its SHA-256, and until when it works.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PreviousSecret {
    pub hash: [u8; 32],
    pub until: DateTime<Utc>,
}

impl StoredKey {
    /// Each secret of the key (the SHA-256 of the current one, and of the
    /// one a rotation replaced) with until when it works (`None`: as long
    /// as the key is not revoked; a replaced secret never outlives the key).
    pub fn secrets(&self) -> impl Iterator<Item = ([u8; 32], Option<DateTime<Utc>>)> + '_ {
        let previous = self.previous.map(|p| {
            let until = match self.key.expires_at {
                Some(e) => e.min(p.until),
                None => p.until,
            };
            (p.hash, Some(until))
        });
        std::iter::once((self.hash, self.key.expires_at)).chain(previous)
    }
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
        super::check_billing_day(self.billing_day)?;
        super::check_tenant_limits(&self.limits)
    }
}
