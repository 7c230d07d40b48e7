//! The limits of SPEC §12 shared by the fleet: a request that meets any of
//! them is decided in Redis, every applicable limit at once in one script
//! call, all or nothing - exact across instances whatever the limit's
//! size (a user's 100 calls a day cannot be split into leases without
//! refusing on one instance what another holds idle).
//!
//! Each count is a hash of every instance's part (`HINCRBY` of its own
//! field), so a give-back or a settlement changes only what that instance
//! took; requests in flight count only the parts of live instances (the
//! heartbeats of `tg:members`), so a killed instance's places come back
//! once it is gone. The burst window is one GCRA arrival time.
//!
//! The changes a hold makes later - calls given back, tokens and spend
//! settled, a place in flight left, a reported record debited - queue on
//! [`Link`] and go over in one script call per batch, retried while Redis
//! is away, and flushed at a graceful stop. A take whose answer never came
//! is undone by its token. `scripts.rs`: the Lua; `parts.rs`: this
//! instance's state; `sim.rs` (tests): the deterministic simulation.

mod parts;
mod scripts;
#[cfg(test)]
mod sim;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub(super) use self::parts::Limits;
use self::parts::Pending;
use self::scripts::{kind_arg, MARK_KEY};
use super::{Cluster, Inner};
use crate::quota::scoped::{Asked, Change, Counted, Fleet, FleetCount};
use crate::telemetry::stats::wall_ms;

/// An instance silent this long no longer holds places in flight (as the
/// heartbeats count the live ones).
const GONE_MS: i64 = 3_000;
/// How often the mark of the counts is checked (and changes that failed
/// to go over are tried again): well within a hold, so every live
/// instance puts its parts back before decisions resume.
const CHECK: Duration = Duration::from_millis(200);

pub(super) fn take_script() -> redis::Script {
    redis::Script::new(scripts::TAKE)
}

pub(super) fn adjust_script() -> redis::Script {
    redis::Script::new(scripts::ADJUST)
}

pub(super) fn undo_script() -> redis::Script {
    redis::Script::new(scripts::UNDO)
}

pub(super) fn mark_script() -> redis::Script {
    redis::Script::new(scripts::MARK)
}

pub(super) fn put_script() -> redis::Script {
    redis::Script::new(scripts::PUT)
}

/// What the fleet answered of a decision's limits: each one's count
/// (before the decision when any refused, after it otherwise) and
/// whether it refused.
#[derive(Debug)]
pub struct Answer {
    pub counts: Vec<FleetCount>,
    pub refused: Vec<bool>,
}

/// A tenant's link to the fleet: where its holds' changes queue.
pub(super) struct Link {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("instance", &self.inner.instance)
            .finish()
    }
}

impl Fleet for Link {
    fn adjust(&self, changes: Vec<Change>) {
        let queued = self.inner.limits.lock().queue(changes, wall_ms() as i64);
        if !queued {
            self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cluster: Redis has been away too long; a change to a limit is dropped");
            return;
        }
        self.inner.limit_wake.notify_one();
    }
}

/// A reply of the take script.
enum Reply {
    /// Decided: each limit's count and whether it refused.
    Decided(Answer),
    /// The counts are being put back: wait.
    Rebuilding,
}

impl Cluster {
    /// Decides `asked` (every limit of SPEC §12 a request meets) in Redis:
    /// taken from all or none (`take`), or only checked. `None` when
    /// Redis cannot answer, or is still waiting for the instances to put
    /// back the counts it lost (the request is refused: nothing falls
    /// back to unshared counts).
    pub async fn decide_limits(&self, asked: &Asked, take: bool) -> Option<Answer> {
        let inner = &self.inner;
        if inner.is_down() {
            inner.stats.denied_down.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let (on, items) = (inner.clone(), asked.items.clone());
        let call = self.runtime.spawn(async move {
            // While the instances put back their parts, the call waits (at
            // most a hold and a second).
            let deadline = tokio::time::Instant::now() + on.hold + Duration::from_secs(1);
            loop {
                match on.take_once(&items, take).await? {
                    Reply::Decided(v) => return Some(v),
                    Reply::Rebuilding if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Reply::Rebuilding => return None,
                }
            }
        });
        let Some(reply) = call.await.ok().flatten() else {
            inner.stats.denied_down.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        Some(reply)
    }
}

impl Inner {
    /// One call of the take script: `None` when Redis did not answer (a
    /// take is then undone by its token) or voided its token.
    async fn take_once(&self, items: &[Counted], take: bool) -> Option<Reply> {
        let now_us = self.clock.now_nanos().0 / 1_000;
        let live_after = wall_ms() as i64 - GONE_MS;
        // A check takes nothing: its token is never written.
        let token = if take {
            self.limits.lock().token(&self.member)
        } else {
            String::from("tg:t:check")
        };
        let mut inv = self.limits_take.prepare_invoke();
        inv.key(super::sync::MEMBERS).key(MARK_KEY).key(&token);
        inv.arg(&self.member)
            .arg(now_us)
            .arg(live_after)
            .arg(u8::from(take))
            .arg(new_epoch())
            .arg(self.hold.as_millis() as i64);
        for c in items {
            inv.key(&c.key);
            inv.arg(kind_arg(c.kind))
                .arg(c.amount)
                .arg(c.need)
                .arg(c.ttl_ms.max(1_000))
                .arg(c.interval_us)
                .arg(c.burst);
        }
        let mut conn = self.conn.clone();
        let reply =
            tokio::time::timeout(self.timeout, inv.invoke_async::<Vec<i64>>(&mut conn)).await;
        let reply = reply.ok().and_then(Result::ok);
        self.answered(reply.is_some());
        let Some(reply) = reply.filter(|r| r.len() >= 2) else {
            if take {
                // Made or not, it is undone (or refused should it arrive).
                self.limits.lock().undo(token, items);
                self.limit_wake.notify_one();
            }
            return None;
        };
        let (status, epoch) = (reply[0], reply[1]);
        let mut limits = self.limits.lock();
        if limits.epoch != Some(epoch) {
            // Counts this instance has not put its parts in: it does now.
            self.limit_wake.notify_one();
        }
        match status {
            -1 => Some(Reply::Rebuilding),
            0 | 1 if reply.len() == 2 + 2 * items.len() => {
                // `{1 taken | 0 refused, epoch, count, refused, ...}`
                let n = items.len();
                let answer = Answer {
                    counts: (0..n).map(|i| reply[2 + 2 * i]).collect(),
                    refused: (0..n).map(|i| reply[3 + 2 * i] != 0).collect(),
                };
                if take && status == 1 {
                    limits.taken(items, &answer.counts, wall_ms() as i64);
                }
                Some(Reply::Decided(answer))
            }
            _ => None,
        }
    }

    /// Makes sure this instance's parts are in the counts Redis holds: when
    /// their epoch is not the one it last put them in (Redis lost them, or
    /// this instance has not met these counts yet), puts every part back.
    /// False when Redis did not answer.
    pub(super) async fn put_parts(&self) -> bool {
        let mut conn = self.conn.clone();
        let mut mark = self.limits_mark.prepare_invoke();
        mark.key(MARK_KEY).arg(new_epoch());
        let epoch = tokio::time::timeout(self.timeout, mark.invoke_async::<i64>(&mut conn)).await;
        let Ok(Ok(epoch)) = epoch else {
            self.answered(false);
            return false;
        };
        let now = wall_ms() as i64;
        let Some(parts) = self.limits.lock().parts_to_put(epoch, now) else {
            return true;
        };
        for chunk in parts.chunks(parts::BATCH) {
            let mut inv = self.limits_put.prepare_invoke();
            inv.arg(&self.member);
            for (key, p) in chunk {
                inv.key(key);
                inv.arg(kind_arg(p.kind)).arg(p.value).arg(p.until_ms - now);
            }
            let reply =
                tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn)).await;
            let ok = matches!(reply, Ok(Ok(_)));
            self.answered(ok);
            if !ok {
                return false;
            }
        }
        if !parts.is_empty() {
            tracing::info!(
                parts = parts.len(),
                "cluster: this instance's parts of the limits' counts put back in Redis"
            );
        }
        self.limits.lock().put(epoch);
        true
    }

    /// Sends what waits, in order (changes in batches, each undo alone);
    /// what fails waits for the next try. True when none is left.
    pub(super) async fn send_limit_changes(&self) -> bool {
        let waiting = self.limits.lock().take_waiting(&self.member);
        let mut sent = 0;
        for p in &waiting {
            let mut conn = self.conn.clone();
            let inv = match p {
                Pending::Undo {
                    token,
                    items,
                    apply,
                } => {
                    let mut inv = self.limits_undo.prepare_invoke();
                    inv.key(token).arg(&self.member).arg(u8::from(*apply));
                    for (key, kind, need, interval) in items {
                        inv.key(key).arg(kind_arg(*kind)).arg(*need).arg(*interval);
                    }
                    inv
                }
                Pending::Batch { token, changes } => {
                    let mut inv = self.limits_adjust.prepare_invoke();
                    inv.key(token).arg(&self.member);
                    for c in changes {
                        inv.key(&c.key);
                        inv.arg(kind_arg(c.kind))
                            .arg(c.by)
                            .arg(c.interval_us)
                            .arg(c.ttl_ms);
                    }
                    inv
                }
                Pending::Change(_) => unreachable!("take_waiting batches every change"),
            };
            let reply =
                tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn)).await;
            let ok = matches!(reply, Ok(Ok(_)));
            self.answered(ok);
            if !ok {
                break;
            }
            sent += 1;
        }
        if sent < waiting.len() {
            self.limits
                .lock()
                .requeue(waiting.into_iter().skip(sent).collect());
            return false;
        }
        true
    }
}

/// A new epoch for a mark this instance might make.
fn new_epoch() -> i64 {
    i64::from(rand::random::<u32>())
}

/// Keeps this instance's parts in Redis's counts (every [`CHECK`], and
/// whenever a decision met counts of another epoch) and sends the limits'
/// changes as they come (woken by [`Link::adjust`]); while Redis is away,
/// both are tried again every tick.
pub(super) async fn run(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.limit_wake.notified() => {}
            _ = tick.tick() => {}
        }
        if inner.stopping.load(Ordering::Acquire) {
            return;
        }
        if inner.put_parts().await {
            inner.send_limit_changes().await;
        }
    }
}
