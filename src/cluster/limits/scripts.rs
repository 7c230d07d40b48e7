//! The Lua scripts that change the limits' counts in Redis - each atomic,
//! so every decision and every change is all or nothing - and the
//! arguments they take.
//!
//! A count is a hash of the instances' parts (fixed windows and requests
//! in flight) or one GCRA arrival time in microseconds (the burst window).
//! The counts carry a mark (`tg:limits`: an epoch and when it was made);
//! while a mark is younger than the hold, decisions wait - the live
//! instances are putting their parts back. Every take writes a token
//! (`tg:t:<member>:<number>`, a minute): a take whose answer was lost is
//! undone by its token, and a token voided first refuses a take that
//! arrives late.

/// `TAKE`: KEYS[1] the live instances (a sorted set of the last
/// heartbeats, ms), KEYS[2] the mark, KEYS[3] the take's token, KEYS[4..]
/// the counts. ARGV: member, now (us), live after (ms), take (1) or check
/// (0), the epoch of a new mark, the hold (ms), then for each count: kind
/// (f fixed, b burst, i in flight), amount, need, ttl (ms), interval (us),
/// burst. Answers `{1 taken | 0 refused, epoch, count, refused, ...}`
/// (counts after a take, before a refusal), `{-1, epoch, ms}` while the
/// parts are put back, `{-2, epoch}` when the token was voided.
pub(crate) const TAKE: &str = r#"
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
if take and redis.call('EXISTS', KEYS[3]) == 1 then
  return {-2, epoch}
end
local n = #KEYS - 3
local counts, refused = {}, {}
local any = false
for i = 1, n do
  local key = KEYS[i + 3]
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
if take and not any then
  redis.call('SET', KEYS[3], '1', 'PX', 60000)
end
local out = {any and 0 or 1, epoch}
for i = 1, n do
  local key = KEYS[i + 3]
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

/// `ADJUST`: KEYS[1] the batch's token, KEYS[2..] the counts; ARGV
/// member, then for each: kind, by, interval (us), ttl (ms). This
/// instance's part changes by `by` (the burst window gives back only) -
/// once: a batch sent again after its answer was lost changes nothing.
pub(crate) const ADJUST: &str = r#"
local member = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', 60000)
for i = 2, #KEYS do
  local b = 1 + (i - 2) * 4
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

/// `UNDO`: KEYS[1] a take's token, KEYS[2..] its counts; ARGV member,
/// apply (1: give back what it took; 0: only void the token), then for
/// each count: kind, need, interval (us). Voids the token either way: a
/// take that arrives later is refused.
pub(crate) const UNDO: &str = r#"
local member = ARGV[1]
local taken = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], 'void', 'PX', 60000)
if taken ~= '1' or ARGV[2] ~= '1' then return 0 end
for i = 2, #KEYS do
  local b = 2 + (i - 2) * 3
  local kind = ARGV[b + 1]
  local need = tonumber(ARGV[b + 2])
  local interval = tonumber(ARGV[b + 3])
  local key = KEYS[i]
  if kind == 'b' then
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat > 0 then
      redis.call('SET', key, string.format('%d', tat - interval * need), 'KEEPTTL')
    end
  else
    if kind == 'i' then need = 1 end
    if need > 0 then
      local v = redis.call('HINCRBY', key, member, -need)
      if v <= 0 then redis.call('HDEL', key, member) end
    end
  end
end
return 1
"#;

/// `MARK`: KEYS[1] the mark; ARGV[1] the epoch of a new one. Answers the
/// epoch (a mark is made when Redis has none).
pub(crate) const MARK: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch then return tonumber(epoch) end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'epoch', ARGV[1],
  'since', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return tonumber(ARGV[1])
"#;

/// `PUT`: KEYS the counts; ARGV member, then for each: kind, part (burst:
/// the arrival time, us), ttl (ms). This instance's parts, put back as
/// they are (absolute: putting them twice changes nothing).
pub(crate) const PUT: &str = r#"
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

use crate::quota::scoped::Kind;

/// A count's kind as the scripts name it.
pub(crate) fn kind_arg(k: Kind) -> &'static str {
    match k {
        Kind::Fixed => "f",
        Kind::Burst => "b",
        Kind::InFlight => "i",
    }
}

/// The key of the mark of the limits' counts.
pub(crate) const MARK_KEY: &str = "tg:limits";
