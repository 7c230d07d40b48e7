//! Limits (SPEC §12) as every engine stores them: a plan's, a tenant's or
//! a key's list in the one codec's bytes (sled's rows hold the list, a
//! PostgreSQL column its bytes). Scope, measure and window as their
//! positions in the model's `ALL` lists.

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::StoreError;
use crate::model::{Limit, Measure, Scope, Window};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LimitRow {
    name: String,
    scope: u8,
    measure: u8,
    window: u8,
    amount: Option<u64>,
    per_seconds: u64,
    burst: u64,
}

fn index<T: PartialEq>(all: &[T], v: &T) -> u8 {
    all.iter().position(|x| x == v).unwrap_or(0) as u8
}

fn at<T: Copy>(all: &[T], i: u8, what: &str) -> Result<T, StoreError> {
    all.get(i as usize)
        .copied()
        .ok_or_else(|| StoreError::Codec(format!("a stored limit has an unknown {what} ({i})")))
}

impl From<&Limit> for LimitRow {
    fn from(l: &Limit) -> LimitRow {
        LimitRow {
            name: l.name.to_string(),
            scope: index(&Scope::ALL, &l.scope),
            measure: index(&Measure::ALL, &l.measure),
            window: index(&Window::ALL, &l.window),
            amount: l.amount,
            per_seconds: l.per_seconds,
            burst: l.burst,
        }
    }
}

impl LimitRow {
    pub(crate) fn limit(&self) -> Result<Limit, StoreError> {
        Ok(Limit {
            name: self.name.as_str().into(),
            scope: at(&Scope::ALL, self.scope, "scope")?,
            measure: at(&Measure::ALL, self.measure, "measure")?,
            window: at(&Window::ALL, self.window, "window")?,
            amount: self.amount,
            per_seconds: self.per_seconds,
            burst: self.burst,
        })
    }
}

pub(crate) fn rows_of(limits: &[Limit]) -> Vec<LimitRow> {
    limits.iter().map(LimitRow::from).collect()
}

pub(crate) fn limits_of(rows: &[LimitRow]) -> Result<Vec<Limit>, StoreError> {
    rows.iter().map(LimitRow::limit).collect()
}

/// A list as one column's bytes (`None` for an empty list).
pub(crate) fn to_bytes(limits: &[Limit]) -> Result<Option<Vec<u8>>, StoreError> {
    if limits.is_empty() {
        return Ok(None);
    }
    Ok(Some(encode(&rows_of(limits))?))
}

/// A column's bytes as a list (`None`: empty).
pub(crate) fn from_bytes(bytes: Option<&[u8]>) -> Result<Vec<Limit>, StoreError> {
    match bytes {
        None => Ok(Vec::new()),
        Some(b) => limits_of(&decode::<Vec<LimitRow>>(b)?),
    }
}
