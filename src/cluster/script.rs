//! The one Lua script through which every instance changes a tenant's
//! shared allocation, and its arguments and answer.
//!
//! A tenant-period is one Redis hash, `tg:{tenant}:<period>` (the braces
//! are a hash tag: a Redis Cluster keeps all of a tenant's keys on one
//! slot). Its fields:
//!
//! - `alloc`: units allocated in the period - spent by any instance, or
//!   held in a lease. The script never grants past `limit - alloc`, so the
//!   fleet cannot allow more than the limit however instances race.
//! - per instance `<i>`: `g:<i>` granted, `s:<i>` spent, `b:<i>` given
//!   back, `v:<i>` counted past the lease, `t:<i>` tokens - running
//!   totals - and `q:<i>`, the number of its last call. An instance sends
//!   its totals whole, and the script applies only the difference from
//!   what it has (from a newer call only), so a call whose answer was
//!   lost, or that arrives late, is harmless. What an instance holds is
//!   `g - s - b`: for a killed instance, what the fleet lost of the
//!   period - withheld, never allowed twice.
//! - `live`: how many instances hold something; a grant is at most the
//!   unallocated rest shared among twice that many, so leases shrink as the
//!   quota runs out, down to one unit a request.
//! - `tokens`, the fleet's; `need`: when (ms) an instance last asked for
//!   more than it got, which tells the others to give back.
//! - An instance's first call to a hash **joins** it: its totals become
//!   its fields, and the allocation gains what it holds and what it spent
//!   that the store does not have yet (`x`: granted - given back + past
//!   the lease - persisted). `<i>` is the instance's name and a number of
//!   its process (`tg-1#5f3a`), so a restarted instance joins anew.
//! - `epoch`: when the hash was made (ms, Redis's clock): a hash missing
//!   in a period where an instance met one was lost.
//! - `hold`, `based`: a hash made again within a period - Redis lost its
//!   data - grants nothing until `hold` (ms) while the live instances join
//!   (the allocation then follows each one's `x:<i>`); then the first
//!   call after it brings the store's persisted total, which is added
//!   once (`based`), and leases are granted again. Until then decisions
//!   come only from the leases already held.

use redis::Script;

use crate::quota::lease::Totals;
use crate::quota::period::Period;

/// Answers that are not an allocation: the hash does not exist (call
/// again with the persisted totals), or the hold is over and the persisted
/// total is wanted.
pub const MISSING: i64 = -1;
pub const BASE: i64 = -3;

pub const SYNC: &str = r#"
local k = KEYS[1]
local i = ARGV[1]
local limit = tonumber(ARGV[2])
local S = tonumber(ARGV[3])
local B = tonumber(ARGV[4])
local V = tonumber(ARGV[5])
local want = tonumber(ARGV[6])
local floor = tonumber(ARGV[7])
local T = tonumber(ARGV[8])
local init = tonumber(ARGV[9])
local now = tonumber(ARGV[11])
local seq = tonumber(ARGV[13])
local G = tonumber(ARGV[14])
local X = tonumber(ARGV[15])
local hold_ms = tonumber(ARGV[16])
local base = tonumber(ARGV[17])
local alloc = tonumber(redis.call('HGET', k, 'alloc'))
if not alloc then
  if init < 0 then return {-1} end
  local t = redis.call('TIME')
  local epoch = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local based = 1
  alloc = init
  if hold_ms > 0 then based = 0; alloc = 0 end
  redis.call('HSET', k, 'alloc', alloc, 'tokens', ARGV[10], 'live', 0, 'epoch', epoch,
    'hold', now + hold_ms, 'based', based)
  redis.call('EXPIRE', k, ARGV[12])
end
local epoch = tonumber(redis.call('HGET', k, 'epoch'))
local based = tonumber(redis.call('HGET', k, 'based'))
local hold = tonumber(redis.call('HGET', k, 'hold'))
local function get(f) return tonumber(redis.call('HGET', k, f .. ':' .. i) or '0') end
local g, s, b, v, q, x = get('g'), get('s'), get('b'), get('v'), get('q'), get('x')
local had = g - s - b
if redis.call('HEXISTS', k, 'q:' .. i) == 0 then
  alloc = alloc + X
  g, s, b, v, q, x = G, S, B, V, seq, X
  if had > 0 then redis.call('HINCRBY', k, 'live', -1); had = 0 end
elseif seq > q then
  if based == 1 then
    alloc = alloc - (B - b) + (V - v)
  else
    alloc = alloc + (X - x)
  end
  s, b, v, q, x = S, B, V, seq, X
end
if based == 0 and now >= hold then
  if base < 0 then
    redis.call('HSET', k, 'alloc', alloc, 'g:' .. i, g, 's:' .. i, s, 'b:' .. i, b,
      'v:' .. i, v, 'q:' .. i, q, 'x:' .. i, x)
    return {-3, epoch}
  end
  alloc = alloc + base
  based = 1
  redis.call('HSET', k, 'based', 1)
end
local live = tonumber(redis.call('HGET', k, 'live') or '0')
local granted = 0
if want > 0 and based == 1 then
  granted = want
  if limit >= 0 then
    local left = math.max(0, limit - alloc)
    local holders = live
    if had <= 0 then holders = holders + 1 end
    local share = math.max(floor, math.ceil(left / (2 * holders)))
    granted = math.min(want, left, share)
    if granted < floor then granted = 0 end
  end
  alloc = alloc + granted
  g = g + granted
  if granted < want then redis.call('HSET', k, 'need', now) end
end
local mine = g - s - b
if had <= 0 and mine > 0 then live = live + 1 elseif had > 0 and mine <= 0 then live = live - 1 end
redis.call('HSET', k, 'alloc', alloc, 'live', live, 'g:' .. i, g, 's:' .. i, s,
  'b:' .. i, b, 'v:' .. i, v, 'q:' .. i, q, 'x:' .. i, x)
local tokens = tonumber(redis.call('HGET', k, 'tokens') or '0')
tokens = tokens + (T - get('t'))
redis.call('HSET', k, 'tokens', tokens, 't:' .. i, T)
local need = tonumber(redis.call('HGET', k, 'need') or '0')
return {granted, alloc, tokens, need, mine, live, g, epoch, 1 - based}
"#;

pub fn sync_script() -> Script {
    Script::new(SYNC)
}

/// The hash of one tenant's period.
pub fn key(tenant: &str, period: Period) -> String {
    format!("tg:{{{tenant}}}:{}", period.0)
}

/// What one call asks of the script.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ask {
    pub limit: Option<u64>,
    /// This instance's running totals and their call number.
    pub totals: Totals,
    pub seq: u64,
    /// The tokens counted here (a running total).
    pub tokens: u64,
    /// Units wanted, and the fewest worth granting (a request's cost).
    pub want: u64,
    pub floor: u64,
    /// To make the hash: the persisted totals, and how long to hold grants
    /// (Redis lost the hash within the period).
    pub init: Option<(u64, u64)>,
    pub hold_ms: u64,
    /// The persisted calls, when a hold has ended.
    pub base: Option<u64>,
}

/// The script's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub granted: u64,
    pub alloc: u64,
    pub tokens: u64,
    /// When (ms) an instance last got less than it asked for.
    pub need_ms: i64,
    /// What this instance holds, as Redis knows it.
    pub mine: u64,
    pub live: u64,
    /// Everything granted to this instance in the period.
    pub granted_total: u64,
    pub epoch: i64,
    /// Grants are held: Redis lost the hash and is being rebuilt.
    pub holding: bool,
}

/// A reply: an answer, or what to call again with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Answer(Answer),
    /// [`MISSING`], or [`BASE`] with the hash's epoch.
    Again(i64, i64),
}

impl Reply {
    pub fn parse(v: &[i64]) -> Option<Reply> {
        match *v {
            [MISSING] => return Some(Reply::Again(MISSING, 0)),
            [BASE, epoch] => return Some(Reply::Again(BASE, epoch)),
            _ => {}
        }
        let [granted, alloc, tokens, need_ms, mine, live, granted_total, epoch, holding] = *v
        else {
            return None;
        };
        let u = |x: i64| x.max(0) as u64;
        Some(Reply::Answer(Answer {
            granted: u(granted),
            alloc: u(alloc),
            tokens: u(tokens),
            need_ms,
            mine: u(mine),
            live: u(live),
            granted_total: u(granted_total),
            epoch,
            holding: holding != 0,
        }))
    }
}

/// Adds the call's keys and arguments to `inv`.
pub fn args(
    inv: &mut redis::ScriptInvocation<'_>,
    key: &str,
    instance: &str,
    a: &Ask,
    now_ms: i64,
    ttl_s: i64,
) {
    let n = |x: u64| x.min(i64::MAX as u64) as i64;
    let t = a.totals;
    // What this instance holds or spent that the store does not have.
    let x = n(t.granted.saturating_sub(t.given) + t.over) - n(t.persisted);
    inv.key(key)
        .arg(instance)
        .arg(a.limit.map_or(-1, n))
        .arg(n(t.spent))
        .arg(n(t.given))
        .arg(n(t.over))
        .arg(a.want)
        .arg(a.floor)
        .arg(n(a.tokens))
        .arg(a.init.map_or(-1, |(c, _)| n(c)))
        .arg(a.init.map_or(0, |(_, t)| n(t)))
        .arg(now_ms)
        .arg(ttl_s)
        .arg(n(a.seq))
        .arg(n(t.granted))
        .arg(x.max(0))
        .arg(a.hold_ms)
        .arg(a.base.map_or(-1, n));
}
