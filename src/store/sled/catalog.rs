//! [`Catalog`] on sled: plans, tenants and keys, each a row in its tree.

use super::codec::{decode, encode};
use std::collections::HashMap;

use super::engine::SledEngine;
use super::keys::tenant_prefix;
use super::rows::{KeyRow, PlanRow, TenantRow};
use crate::model::{Plan, StoredKey, Tenant};
use crate::store::{Catalog, Engine, KeyUse, StoreError};

impl Catalog for SledEngine {
    fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        Self::all::<PlanRow, _>(&self.plans)
    }
    fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        self.put(&self.plans, &plan.id, PlanRow::from(plan))
    }
    fn delete_plan(&self, id: &str) -> Result<(), StoreError> {
        self.remove(&self.plans, id)
    }
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        Self::all::<TenantRow, _>(&self.tenants)
    }
    fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(match self.tenants.get(id)? {
            Some(v) => Some(decode::<TenantRow>(&v)?.try_into()?),
            None => None,
        })
    }
    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.put(&self.tenants, &tenant.id, TenantRow::from(tenant))
    }
    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        Self::all::<KeyRow, _>(&self.keys)
    }
    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        Ok(match self.keys.get(id)? {
            Some(v) => Some(decode::<KeyRow>(&v)?.try_into()?),
            None => None,
        })
    }
    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.put(&self.keys, &key.key.id, KeyRow::from(key))
    }
    fn import(&self, tenants: &[Tenant], keys: &[StoredKey]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for t in tenants {
            batch.insert(t.id.as_bytes(), encode(&TenantRow::from(t))?);
        }
        self.tenants.apply_batch(batch)?;
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.insert(k.key.id.as_bytes(), encode(&KeyRow::from(k))?);
        }
        self.keys.apply_batch(batch)?;
        self.durable()
    }
    fn touch_keys(&self, used: &[KeyUse]) -> Result<(), StoreError> {
        for u in used {
            let mut k = tenant_prefix(&u.tenant);
            k.extend_from_slice(u.key_id.as_bytes());
            self.key_used.fetch_and_update(k, |old| {
                let kept = old
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map_or(i64::MIN, i64::from_be_bytes);
                Some(kept.max(u.at_ms).to_be_bytes().to_vec())
            })?;
        }
        Ok(())
    }
    fn keys_last_used(&self, tenant_id: &str) -> Result<HashMap<String, i64>, StoreError> {
        let prefix = tenant_prefix(tenant_id);
        let mut out = HashMap::new();
        for kv in self.key_used.scan_prefix(&prefix) {
            let (k, v) = kv?;
            if let (Ok(id), Ok(at)) = (
                std::str::from_utf8(&k[prefix.len()..]),
                <[u8; 8]>::try_from(v.as_ref()),
            ) {
                out.insert(id.to_string(), i64::from_be_bytes(at));
            }
        }
        Ok(out)
    }
}
