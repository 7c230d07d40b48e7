//! [`Catalog`] on sled: plans, tenants and keys, each a row in its tree.

use super::codec::{decode, encode};
use super::engine::SledEngine;
use super::rows::{KeyRow, PlanRow, TenantRow};
use crate::model::{Plan, StoredKey, Tenant};
use crate::store::{Catalog, Engine, StoreError};

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
            Some(v) => Some(decode::<TenantRow>(&v)?.into()),
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
            Some(v) => Some(decode::<KeyRow>(&v)?.into()),
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
}
