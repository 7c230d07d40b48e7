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
/// How soon changes that failed to go over are tried again.
const RETRY: Duration = Duration::from_millis(100);

const TAKE: &str = r#"
-- KEYS[1]: the live instances (a sorted set: the last heartbeat, ms);
-- KEYS[2..]: the counts of the limits a request meets.
-- ARGV: member, now (us), live after (ms), take (1) or check (0), then
-- for each limit: kind (f fixed, b burst, i in flight), amount, need,
-- ttl (ms), interval (us), burst.
local member = ARGV[1]
local now = tonumber(ARGV[2])
local live_after = tonumber(ARGV[3])
local take = ARGV[4] == '1'
local n = #KEYS - 1
local counts, refused = {}, {}
local any = false
for i = 1, n do
  local key = KEYS[i + 1]
  local b = 4 + (i - 1) * 6
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
local out = {any and 0 or 1}
for i = 1, n do
  local key = KEYS[i + 1]
  local b = 4 + (i - 1) * 6
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
        let mut waiting = self.inner.limit_changes.lock();
        if waiting.len() + changes.len() > MAX_WAITING {
            self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cluster: Redis has been away too long; a change to a limit is dropped");
            return;
        }
        waiting.extend(changes);
        drop(waiting);
        self.inner.limit_wake.notify_one();
    }
}

impl Cluster {
    /// Decides `asked` (every limit of SPEC §12 a request meets) in Redis:
    /// taken from all or none (`take`), or only checked. `None` when
    /// Redis cannot answer (the request is refused: nothing falls back to
    /// unshared counts).
    pub async fn decide_limits(&self, asked: &Asked, take: bool) -> Option<Answer> {
        let inner = &self.inner;
        if inner.is_down() {
            inner.stats.denied_down.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let now_us = inner.clock.now_nanos().0 / 1_000;
        let live_after = wall_ms() as i64 - GONE_MS;
        let (on, items) = (inner.clone(), asked.items.clone());
        let call = self.runtime.spawn(async move {
            let mut inv = on.limits_take.prepare_invoke();
            inv.key(super::sync::MEMBERS);
            inv.arg(&on.member)
                .arg(now_us)
                .arg(live_after)
                .arg(u8::from(take));
            for c in &items {
                inv.key(&c.key);
                inv.arg(kind_arg(c.kind))
                    .arg(c.amount)
                    .arg(c.need)
                    .arg(c.ttl_ms.max(1_000))
                    .arg(c.interval_us)
                    .arg(c.burst);
            }
            let mut conn = on.conn.clone();
            let reply =
                tokio::time::timeout(on.timeout, inv.invoke_async::<Vec<i64>>(&mut conn)).await;
            let reply = reply.ok().and_then(Result::ok);
            on.answered(reply.is_some());
            reply
        });
        let Some(reply) = call.await.ok().flatten() else {
            inner.stats.denied_down.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let n = asked.items.len();
        if reply.len() != 1 + 2 * n {
            return None;
        }
        let counts = (0..n).map(|i| reply[1 + 2 * i]).collect();
        let refused = (0..n).map(|i| reply[2 + 2 * i] != 0).collect();
        Some(Answer { counts, refused })
    }
}

impl Inner {
    /// Sends the changes waiting, in batches; what fails waits for the
    /// next try. True when none is left.
    pub(super) async fn send_limit_changes(&self) -> bool {
        let batch = std::mem::take(&mut *self.limit_changes.lock());
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
            let mut waiting = self.limit_changes.lock();
            let later = std::mem::take(&mut *waiting);
            waiting.extend(batch.into_iter().skip(sent));
            waiting.extend(later);
            return false;
        }
        true
    }
}

/// Sends the limits' changes as they come (woken by [`Link::adjust`]),
/// trying again every [`RETRY`] while Redis is away.
pub(super) async fn run(inner: Arc<Inner>) {
    loop {
        inner.limit_wake.notified().await;
        while !inner.send_limit_changes().await {
            if inner.stopping.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}
