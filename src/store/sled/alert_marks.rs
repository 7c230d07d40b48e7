//! [`AlertMarks`] on sled: the `alerts` tree.

use super::{codec::encode, engine::SledEngine, rows::MarkRow};
use crate::quota::period::Period;
use crate::store::{AlertMark, AlertMarks, Engine, StoreError};

impl AlertMarks for SledEngine {
    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError> {
        Self::all::<MarkRow, _>(&self.alerts)
    }
    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError> {
        self.put(&self.alerts, &mark.key(), MarkRow::from(mark))
    }
    fn claim_alert_mark(&self, mark: &AlertMark) -> Result<bool, StoreError> {
        let value = encode(&MarkRow::from(mark))?;
        let claimed = self
            .alerts
            .compare_and_swap(mark.key(), None as Option<&[u8]>, Some(value))?
            .is_ok();
        self.durable()?;
        Ok(claimed)
    }
    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError> {
        for mark in self.alert_marks()? {
            if mark.period < before {
                self.alerts.remove(mark.key())?;
            }
        }
        self.durable()
    }
}
