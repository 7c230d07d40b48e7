//! The one Lua script through which every instance changes a tenant's
//! shared allocation, and its arguments and answer.
//!
//! A tenant-period has one Redis hash per measure: `tg:{tenant}:<period>`
//! for its calls, `tg:{tenant}:<period>:tokens` for its tokens (the braces
//! are a hash tag: a Redis Cluster keeps all of a tenant's keys on one
//! slot). The script knows units, not what they are. A hash's fields:
//!
//! - `alloc`: units allocated in the period - spent by any instance, or
//!   held in a lease. The script never grants past `limit - alloc`, so the
//!   fleet cannot allow more than the limit however instances race.
//! - per instance `<i>`: `g:<i>` granted, `s:<i>` spent, `b:<i>` given
//!   back, `v:<i>` counted past the lease - running totals - and `q:<i>`,
//!   the number of its last call. An instance sends
//!   its totals whole, and the script applies only the difference from
//!   what it has (from a newer call only), so a call whose answer was
//!   lost, or that arrives late, is harmless. What an instance holds is
//!   `g - s - b`: for a killed instance, what the fleet lost of the
//!   period - withheld, never allowed twice.
//! - `live`: how many instances hold something; a grant is at most the
//!   unallocated rest shared among twice that many, so leases shrink as the
//!   quota runs out, down to one unit a request.
//! - `need`: when (ms) an instance last asked for more than it got, which
//!   tells the others to give back.
//! - The hash is made from the store's persisted total of the period (of
//!   its measure), read in one snapshot with each process's part of it:
//!   `pc:<i>`, the units of `<i>`'s records the store had then, and
//!   `wg:<i>`/`wb:<i>`, the granted and given back totals `<i>` wrote to
//!   the store before spending its grants.
//!   Until `<i>` joins, it counts as `wg - wb - pc`: everything it could
//!   have spent and not persisted - so a process killed before Redis lost
//!   the hash, which never joins the rebuilt one, cannot have its
//!   unpersisted spending granted again (withheld instead). Joined, it
//!   counts by its running totals, its grants never below `wg` (a join
//!   built before its last grants, then a kill). The maker reads the store
//!   again once the hash exists and sends it: `wg`/`wb` only ever rise, so
//!   a hash made from an older read (a late call) still counts every grant
//!   written before it was made (each found by the simulation).
//! - An instance's first call to a hash **joins** it: its totals become
//!   its fields; the allocation gains what it holds and what it spent or
//!   counted that the store did not have when the hash was made (granted -
//!   given back + past the lease - `pc:<i>`). So nothing counts twice and nothing is missed,
//!   whenever each instance's records were written. `<i>` is the
//!   instance's name and a number of its process (`tg-1#5f3a`), so a
//!   restarted instance joins anew.
//! - `epoch`: when the hash was made (ms, Redis's clock).
//! - `alloc` is worked out again by every call from the fields it
//!   follows - `base` (the store's total the hash was made from) and each
//!   joined instance's `g - b + v - pc` - so a tampered `alloc` (`HSET ...
//!   alloc 0`) heals at the next call. And no grant is made past the calls
//!   the store has persisted, as the calling instance last read them
//!   (every call carries that figure): a hash tampered with or gone stale
//!   cannot grant a second quota. That check only holds grants back (it is
//!   never written into `alloc`: a process that has not joined yet may
//!   have records the store has and the hash not, which its join adds).
//! - An instance is never granted less than it says it was: a call whose
//!   `G` (everything this instance took) is above `g:<i>` means the hash
//!   forgot grants - it joined a hash made again with a call built before
//!   the last grants of the lost one arrived - and the difference counts
//!   again (found by the simulation, `sim.rs`).
//! - `hold`: a hash made again - Redis lost it: an instance had met it,
//!   or the store says one was made - grants nothing until `hold` (ms)
//!   while the live instances join with what they hold; until then
//!   decisions come only from the leases already held.

use redis::Script;

use crate::quota::lease::{Measure, Totals};
use crate::quota::period::Period;
use crate::store::shared::Shares;

/// The answer that is not an allocation: the hash does not exist (call
/// again with the store's shares of the period).
pub(super) const MISSING: i64 = -1;

pub(super) const SYNC: &str = r#"
local k = KEYS[1]
local i = ARGV[1]
local limit = tonumber(ARGV[2])
local S = tonumber(ARGV[3])
local B = tonumber(ARGV[4])
local V = tonumber(ARGV[5])
local want = tonumber(ARGV[6])
local floor = tonumber(ARGV[7])
local init = tonumber(ARGV[8])
local now = tonumber(ARGV[9])
local seq = tonumber(ARGV[11])
local G = tonumber(ARGV[12])
local hold_ms = tonumber(ARGV[13])
local stored = tonumber(ARGV[14])
local alloc = tonumber(redis.call('HGET', k, 'alloc'))
if not alloc then
  if init < 0 then return {-1} end
  local t = redis.call('TIME')
  local epoch = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  alloc = init
  -- A hash made anew holds nothing: a caller whose clock read came
  -- before the maker's must not find it holding.
  local hold_until = 0
  if hold_ms > 0 then hold_until = now + hold_ms end
  redis.call('HSET', k, 'alloc', alloc, 'base', init, 'live', 0,
    'epoch', epoch, 'hold', hold_until)
  for j = 15, #ARGV - 3, 4 do
    redis.call('HSET', k, 'pc:' .. ARGV[j], ARGV[j + 1], 'wg:' .. ARGV[j], ARGV[j + 2],
      'wb:' .. ARGV[j], ARGV[j + 3])
  end
  redis.call('EXPIRE', k, ARGV[10])
elseif init >= 0 then
  -- Shares read again after the hash was made (it may have been made
  -- from an older read): what a process not joined wrote of its grants
  -- only ever raises its count.
  for j = 15, #ARGV - 3, 4 do
    for o, f in ipairs({'wg:', 'wb:'}) do
      local w = tonumber(redis.call('HGET', k, f .. ARGV[j]) or '0')
      if tonumber(ARGV[j + 1 + o]) > w then redis.call('HSET', k, f .. ARGV[j], ARGV[j + 1 + o]) end
    end
  end
end
local epoch = tonumber(redis.call('HGET', k, 'epoch'))
local hold = tonumber(redis.call('HGET', k, 'hold') or '0')
local function get(f) return tonumber(redis.call('HGET', k, f .. ':' .. i) or '0') end
local g, s, b, v, q = get('g'), get('s'), get('b'), get('v'), get('q')
local had = g - s - b
if redis.call('HEXISTS', k, 'q:' .. i) == 0 then
  alloc = alloc + math.max(0, G - B + V - get('pc'))
  if had > 0 then redis.call('HINCRBY', k, 'live', -1) end
  had = 0
  g, s, b, v, q = G, S, B, V, seq
elseif seq > q then
  alloc = alloc - (B - b) + (V - v)
  s, b, v, q = S, B, V, seq
  if G > g then
    alloc = alloc + (G - g)
    g = G
  end
end
redis.call('HSET', k, 'g:' .. i, g, 's:' .. i, s, 'b:' .. i, b, 'v:' .. i, v, 'q:' .. i, q)
local base = tonumber(redis.call('HGET', k, 'base'))
if base then
  alloc = base
  local f = redis.call('HGETALL', k)
  local h = {}
  for j = 1, #f, 2 do h[f[j]] = f[j + 1] end
  for name, _ in pairs(h) do
    if string.sub(name, 1, 2) == 'q:' then
      -- A joined process, by its running totals - and never by fewer
      -- grants than it wrote to the store (it may have joined with a call
      -- built before its last grants, and been killed since).
      local m = string.sub(name, 3)
      local function n(p) return tonumber(h[p .. ':' .. m] or '0') end
      alloc = alloc + math.max(0, math.max(n('g'), n('wg')) - n('b') + n('v') - n('pc'))
    elseif string.sub(name, 1, 3) == 'wg:' then
      -- A process that has not joined counts by the grants it wrote.
      local m = string.sub(name, 4)
      if h['q:' .. m] == nil then
        local function n(p) return tonumber(h[p .. ':' .. m] or '0') end
        alloc = alloc + math.max(0, n('wg') - n('wb') - n('pc'))
      end
    end
  end
end
local checked = math.max(alloc, stored)
local holding = now < hold
local live = tonumber(redis.call('HGET', k, 'live') or '0')
local granted = 0
if want > 0 and not holding then
  granted = want
  if limit >= 0 then
    local left = math.max(0, limit - checked)
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
  'b:' .. i, b, 'v:' .. i, v, 'q:' .. i, q)
local need = tonumber(redis.call('HGET', k, 'need') or '0')
local held = 0
if holding then held = 1 end
return {granted, alloc, need, mine, live, g, epoch, held}
"#;

pub(super) fn sync_script() -> Script {
    Script::new(SYNC)
}

/// The hash of one measure of a tenant's period.
pub fn key(tenant: &str, period: Period, m: Measure) -> String {
    match m {
        Measure::Calls => format!("tg:{{{tenant}}}:{}", period.0),
        Measure::Tokens => format!("tg:{{{tenant}}}:{}:tokens", period.0),
    }
}

/// What a hash is made from: the store's persisted units of the measure,
/// and of each process its part of them and the grants it wrote (granted,
/// given back).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Init {
    pub total: u64,
    pub(crate) by_process: Vec<(String, u64, u64, u64)>,
}

impl Init {
    pub(super) fn of(shares: &Shares, m: Measure) -> Init {
        let units = |t: &crate::store::PeriodTotals| match m {
            Measure::Calls => t.calls,
            Measure::Tokens => t.tokens,
        };
        let mut by_process: Vec<(String, u64, u64, u64)> = shares
            .by_process
            .iter()
            .map(|(p, t)| (p.clone(), units(t), 0, 0))
            .collect();
        for (p, granted, given) in &shares.grants {
            match by_process.iter_mut().find(|row| &row.0 == p) {
                Some(row) => (row.2, row.3) = (*granted, *given),
                None => by_process.push((p.clone(), 0, *granted, *given)),
            }
        }
        Init {
            total: units(&shares.total),
            by_process,
        }
    }
}

/// What one call asks of the script.
#[derive(Clone, Debug, Default)]
pub(super) struct Ask {
    pub limit: Option<u64>,
    /// This instance's running totals and their call number.
    pub totals: Totals,
    pub(crate) seq: u64,
    /// Units wanted, and the fewest worth granting (a request's cost).
    pub want: u64,
    pub floor: u64,
    /// To make the hash: the store's units of the period, and how long to
    /// hold grants (Redis lost the hash).
    pub(crate) init: Option<Init>,
    pub(crate) hold_ms: u64,
    /// The units the store has persisted, as this instance last read them.
    pub stored: u64,
}

/// The script's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Answer {
    pub granted: u64,
    pub alloc: u64,
    /// When (ms) an instance last got less than it asked for.
    pub(crate) need_ms: i64,
    /// What this instance holds, as Redis knows it.
    pub mine: u64,
    pub live: u64,
    /// Everything granted to this instance in the period.
    pub(crate) granted_total: u64,
    pub(crate) epoch: i64,
    /// Grants are held: Redis lost the hash and is being rebuilt.
    pub holding: bool,
}

/// A reply: an answer, or that the hash is to be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    Answer(Answer),
    Missing,
}

impl Reply {
    pub(super) fn parse(v: &[i64]) -> Option<Reply> {
        if v == [MISSING] {
            return Some(Reply::Missing);
        }
        let [granted, alloc, need_ms, mine, live, granted_total, epoch, holding] = *v else {
            return None;
        };
        let u = |x: i64| x.max(0) as u64;
        Some(Reply::Answer(Answer {
            granted: u(granted),
            alloc: u(alloc),
            need_ms,
            mine: u(mine),
            live: u(live),
            granted_total: u(granted_total),
            epoch,
            holding: holding != 0,
        }))
    }
}

/// One argument of the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Arg<'a> {
    Int(i64),
    Text(&'a str),
}

/// The script's `ARGV`, in order (`KEYS[1]` is [`key`]).
pub(super) fn argv<'a>(instance: &'a str, a: &'a Ask, now_ms: i64, ttl_s: i64) -> Vec<Arg<'a>> {
    let n = |x: u64| Arg::Int(x.min(i64::MAX as u64) as i64);
    let t = a.totals;
    let mut argv = vec![
        Arg::Text(instance),
        a.limit.map_or(Arg::Int(-1), n),
        n(t.spent),
        n(t.given),
        n(t.over),
        n(a.want),
        n(a.floor),
        a.init.as_ref().map_or(Arg::Int(-1), |s| n(s.total)),
        Arg::Int(now_ms),
        Arg::Int(ttl_s),
        n(a.seq),
        n(t.granted),
        n(a.hold_ms),
        n(a.stored),
    ];
    for (process, part, granted, given) in a.init.iter().flat_map(|s| &s.by_process) {
        argv.extend([Arg::Text(process), n(*part), n(*granted), n(*given)]);
    }
    argv
}

/// Adds the call's keys and arguments to `inv`.
pub(super) fn args(
    inv: &mut redis::ScriptInvocation<'_>,
    key: &str,
    instance: &str,
    a: &Ask,
    now_ms: i64,
    ttl_s: i64,
) {
    inv.key(key);
    for arg in argv(instance, a, now_ms, ttl_s) {
        match arg {
            Arg::Int(v) => inv.arg(v),
            Arg::Text(v) => inv.arg(v),
        };
    }
}
