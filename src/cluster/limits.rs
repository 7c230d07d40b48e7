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
//! is away, and flushed at a graceful stop.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Cluster, Inner};
use crate::quota::scoped::{Asked, Change, Fleet, FleetCount, Kind};
use crate::telemetry::stats::wall_ms;

/// An instance silent this long no longer holds places in flight (as the
/// heartbeats count the live ones).
const GONE_MS: i64 = 3_000;
/// Changes sent in one call at most, and how many may wait at most (past
/// that a change is dropped and counted as an error: Redis has been away
/// for very long).
const BATCH: usize = 256;
const MAX_WAITING: usize = 1_000_000;
/// How often the mark of the counts is checked (and changes that failed
/// to go over are tried again): well within a hold, so every live
/// instance puts its parts back before decisions resume.
const CHECK: Duration = Duration::from_millis(200);

const TAKE: &str = r#"
-- KEYS[1]: the live instances (a sorted set: the last heartbeat, ms);
-- KEYS[2]: the mark of the counts (their epoch, and since when, ms);
-- KEYS[3..]: the counts of the limits a request meets.
-- ARGV: member, now (us), live after (ms), take (1) or check (0), the
-- epoch of a new mark, the hold (ms), then for each limit: kind (f fixed,
-- b burst, i in flight), amount, need, ttl (ms), interval (us), burst.
-- Answers {1 taken | 0 refused, epoch, then count and refused of each},
-- or {-1, epoch, ms to wait} while the instances put back their parts.
local member = ARGV[1]
local now = tonumber(ARGV[2])
local live_after = tonumber(ARGV[3])
local take = ARGV[4] == '1'
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold = tonumber(ARGV[6])
local mark = redis.call('HMGET', KEYS[2], 'epoch', 'since')
if not mark[1] then
  redis.call('HSET', KEYS[2], 'epoch', ARGV[5], 'since', now_ms)
  return {-1, tonumber(ARGV[5]), hold}
end
local epoch = tonumber(mark[1])
local left = tonumber(mark[2]) + hold - now_ms
if left > 0 then
  return {-1, epoch, left}
end
local n = #KEYS - 2
local counts, refused = {}, {}
local any = false
for i = 1, n do
  local key = KEYS[i + 2]
  local b = 6 + (i - 1) * 6
  local kind = ARGV[b + 1]
  local amount = tonumber(ARGV[b + 2])
  local need = tonumber(ARGV[b + 3])
  local interval = tonumber(ARGV[b + 5])
  local burst = tonumber(ARGV[b + 6])
  local count, no = 0, false
  if kind == 'b' then
    count = tonumber(redis.call('GET', key) or '0')
    local tat = math.max(count, now) + interval * need
    no = tat - now > interval * burst
  else
    local parts = redis.call('HGETALL', key)
    for j = 1, #parts, 2 do
      local v = tonumber(parts[j + 1])
      if kind == 'i' and parts[j] ~= member then
        local beat = redis.call('ZSCORE', KEYS[1], parts[j])
        if (not beat) or tonumber(beat) < live_after then
          redis.call('HDEL', key, parts[j])
          v = 0
        end
      end
      if v > 0 then count = count + v end
    end
    if kind == 'i' then need = 1 end
    if need == 0 then no = count >= amount else no = count + need > amount end
  end
  counts[i] = count
  refused[i] = no
  if no then any = true end
end
local out = {any and 0 or 1, epoch}
for i = 1, n do
  local key = KEYS[i + 2]
  local b = 6 + (i - 1) * 6
  local kind = ARGV[b + 1]
  local need = tonumber(ARGV[b + 3])
  local ttl = tonumber(ARGV[b + 4])
  local interval = tonumber(ARGV[b + 5])
  if take and not any then
    if kind == 'b' then
      counts[i] = math.max(counts[i], now) + interval * need
      redis.call('SET', key, string.format('%d', counts[i]),
        'PX', math.floor((counts[i] - now) / 1000) + ttl)
    elseif kind == 'i' then
      redis.call('HINCRBY', key, member, 1)
      redis.call('PEXPIRE', key, ttl)
      counts[i] = counts[i] + 1
    elseif need > 0 then
      redis.call('HINCRBY', key, member, need)
      redis.call('PEXPIRE', key, ttl)
      counts[i] = counts[i] + need
    end
  end
  out[#out + 1] = counts[i]
  out[#out + 1] = refused[i] and 1 or 0
end
return out
"#;

const ADJUST: &str = r#"
-- KEYS: counts; ARGV: member, then for each: kind, by, interval (us), ttl (ms).
local member = ARGV[1]
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 4
  local kind = ARGV[b + 1]
  local by = tonumber(ARGV[b + 2])
  local interval = tonumber(ARGV[b + 3])
  local ttl = tonumber(ARGV[b + 4])
  local key = KEYS[i]
  if kind == 'b' then
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat > 0 and by < 0 then
      redis.call('SET', key, string.format('%d', tat + interval * by), 'KEEPTTL')
    end
  else
    local v = redis.call('HINCRBY', key, member, by)
    if v <= 0 then redis.call('HDEL', key, member) end
    if by > 0 or redis.call('PTTL', key) == -1 then
      redis.call('PEXPIRE', key, math.max(ttl, 1000))
    end
  end
end
return 1
"#;

const MARK: &str = r#"
-- KEYS[1]: the mark of the counts; ARGV[1]: the epoch of a new one.
-- Answers the epoch (a mark is made when Redis has none).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch then return tonumber(epoch) end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'epoch', ARGV[1],
  'since', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return tonumber(ARGV[1])
"#;

const PUT: &str = r#"
-- KEYS: counts; ARGV: member, then for each: kind, part (burst: the
-- arrival time, us), ttl (ms). This instance's parts, put back.
local member = ARGV[1]
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 3
  local kind = ARGV[b + 1]
  local part = tonumber(ARGV[b + 2])
  local ttl = math.max(tonumber(ARGV[b + 3]), 1000)
  local key = KEYS[i]
  if kind == 'b' then
    local tat = tonumber(redis.call('GET', key) or '0')
    if part > tat then
      redis.call('SET', key, string.format('%d', part), 'PX', ttl)
    end
  elseif part > 0 then
    redis.call('HSET', key, member, part)
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('HDEL', key, member)
  end
end
return 1
"#;

pub(super) fn mark_script() -> redis::Script {
    redis::Script::new(MARK)
}

pub(super) fn put_script() -> redis::Script {
    redis::Script::new(PUT)
}

pub(super) fn take_script() -> redis::Script {
    redis::Script::new(TAKE)
}

pub(super) fn adjust_script() -> redis::Script {
    redis::Script::new(ADJUST)
}

fn kind_arg(k: Kind) -> &'static str {
    match k {
        Kind::Fixed => "f",
        Kind::Burst => "b",
        Kind::InFlight => "i",
    }
}

/// What the fleet answered of a decision's limits: each one's count
/// (before the decision when any refused, after it otherwise) and
/// whether it refused.
#[derive(Debug)]
pub struct Answer {
    pub counts: Vec<FleetCount>,
    pub refused: Vec<bool>,
}

/// What this instance keeps of the limits' counts: the changes waiting to
/// go over, its own part of each count (to put back should Redis lose
/// them), and the epoch of the counts it last put its parts in.
#[derive(Debug, Default)]
pub(super) struct Limits {
    waiting: Vec<Change>,
    parts: HashMap<String, Part>,
    epoch: Option<i64>,
    pruned_ms: i64,
}

/// This instance's part of one count: units (fixed, in flight) or the
/// burst window's arrival time (us), and until when it matters (ms).
#[derive(Clone, Copy, Debug)]
struct Part {
    kind: Kind,
    value: i64,
    until_ms: i64,
}

impl Limits {
    fn note(&mut self, key: &str, kind: Kind, ttl_ms: i64, f: impl FnOnce(i64) -> i64) {
        let until_ms = wall_ms() as i64 + ttl_ms.max(1_000);
        let part = self.parts.entry(key.to_string()).or_insert(Part {
            kind,
            value: 0,
            until_ms,
        });
        part.value = f(part.value).max(0);
        part.until_ms = part.until_ms.max(until_ms);
    }

    /// Drops the parts whose counts have expired (every ten seconds).
    fn prune(&mut self) {
        let now = wall_ms() as i64;
        if now - self.pruned_ms >= 10_000 {
            self.pruned_ms = now;
            self.parts.retain(|_, p| p.until_ms > now);
        }
    }
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
        let mut limits = self.inner.limits.lock();
        if limits.waiting.len() + changes.len() > MAX_WAITING {
            self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cluster: Redis has been away too long; a change to a limit is dropped");
            return;
        }
        for c in &changes {
            let (by, interval) = (c.by, c.interval_us);
            limits.note(&c.key, c.kind, c.ttl_ms, |v| match c.kind {
                Kind::Burst => v.saturating_add(interval.saturating_mul(by)),
                _ => v.saturating_add(by),
            });
        }
        limits.waiting.extend(changes);
        drop(limits);
        self.inner.limit_wake.notify_one();
    }
}

/// A reply of the take script: decided, or the counts are being put back.
enum Reply {
    Decided(Vec<i64>),
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
        let n = asked.items.len();
        if reply.len() != 2 + 2 * n {
            return None;
        }
        let counts: Vec<i64> = (0..n).map(|i| reply[2 + 2 * i]).collect();
        let refused: Vec<bool> = (0..n).map(|i| reply[3 + 2 * i] != 0).collect();
        if take && reply[0] == 1 {
            // Taken: this instance's parts grow by what it took.
            let mut limits = inner.limits.lock();
            for (c, &count) in asked.items.iter().zip(&counts) {
                let need = c.need as i64;
                match c.kind {
                    Kind::Burst => limits.note(&c.key, c.kind, c.ttl_ms, |_| count),
                    Kind::InFlight => limits.note(&c.key, c.kind, c.ttl_ms, |v| v + 1),
                    Kind::Fixed if need > 0 => {
                        limits.note(&c.key, c.kind, c.ttl_ms, |v| v.saturating_add(need))
                    }
                    Kind::Fixed => {}
                }
            }
        }
        Some(Answer { counts, refused })
    }
}

impl Inner {
    /// One call of the take script: `None` when Redis did not answer.
    async fn take_once(
        &self,
        items: &[crate::quota::scoped::Counted],
        take: bool,
    ) -> Option<Reply> {
        let now_us = self.clock.now_nanos().0 / 1_000;
        let live_after = wall_ms() as i64 - GONE_MS;
        let mut inv = self.limits_take.prepare_invoke();
        inv.key(super::sync::MEMBERS).key(MARK_KEY);
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
        let reply = reply?;
        let (&status, &epoch) = (reply.first()?, reply.get(1)?);
        if self.limits.lock().epoch != Some(epoch) {
            // Counts this instance has not put its parts in: it does now.
            self.limit_wake.notify_one();
        }
        Some(if status < 0 {
            Reply::Rebuilding
        } else {
            Reply::Decided(reply)
        })
    }

    /// Makes sure this instance's parts are in the counts Redis holds: when
    /// their epoch is not the one it last put them in (Redis lost them, or
    /// this instance has not met these counts yet), puts every part back
    /// (absolute values: trying again is harmless) - the changes waiting
    /// are in the parts, so they go too. False when Redis did not answer.
    pub(super) async fn put_parts(&self) -> bool {
        let mut conn = self.conn.clone();
        let mut mark = self.limits_mark.prepare_invoke();
        mark.key(MARK_KEY).arg(new_epoch());
        let epoch = tokio::time::timeout(self.timeout, mark.invoke_async::<i64>(&mut conn)).await;
        let Ok(Ok(epoch)) = epoch else {
            self.answered(false);
            return false;
        };
        let parts: Vec<(String, Part)> = {
            let mut limits = self.limits.lock();
            limits.prune();
            if limits.epoch == Some(epoch) {
                return true;
            }
            limits.waiting.clear();
            let now = wall_ms() as i64;
            limits
                .parts
                .iter()
                .filter(|(_, p)| p.until_ms > now)
                .map(|(k, p)| (k.clone(), *p))
                .collect()
        };
        let now = wall_ms() as i64;
        for chunk in parts.chunks(BATCH) {
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
        self.limits.lock().epoch = Some(epoch);
        true
    }

    /// Sends the changes waiting, in batches; what fails waits for the
    /// next try. True when none is left.
    pub(super) async fn send_limit_changes(&self) -> bool {
        let batch = std::mem::take(&mut self.limits.lock().waiting);
        let mut sent = 0;
        for chunk in batch.chunks(BATCH) {
            let mut inv = self.limits_adjust.prepare_invoke();
            inv.arg(&self.member);
            for c in chunk {
                inv.key(&c.key);
                inv.arg(kind_arg(c.kind))
                    .arg(c.by)
                    .arg(c.interval_us)
                    .arg(c.ttl_ms);
            }
            let mut conn = self.conn.clone();
            let reply =
                tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn)).await;
            let ok = matches!(reply, Ok(Ok(_)));
            self.answered(ok);
            if !ok {
                break;
            }
            sent += chunk.len();
        }
        if sent < batch.len() {
            // Put back in front of anything queued meanwhile, in order.
            let mut limits = self.limits.lock();
            let later = std::mem::take(&mut limits.waiting);
            limits.waiting.extend(batch.into_iter().skip(sent));
            limits.waiting.extend(later);
            return false;
        }
        true
    }
}

/// The key of the mark of the limits' counts.
const MARK_KEY: &str = "tg:limits";

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
