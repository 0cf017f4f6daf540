//! The Lua scripts of the shared store: each step of a budget or a limit is one script, run
//! atomically by Redis, so that no instance ever reads a counter and writes it back. Times are
//! Redis's own clock (`TIME`), never an instance's, so instances whose clocks differ agree.

/// `now` in milliseconds, by Redis's clock.
const NOW: &str =
    "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Drops the account's expired reservations (an instance that died holds them): KEYS[1] the
/// account hash, KEYS[2] its expiry set.
const PURGE: &str = r"
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, m in ipairs(dead) do
  local amt = tonumber(redis.call('HGET', KEYS[1], 'r:' .. m) or '0')
  redis.call('HINCRBY', KEYS[1], 'reserved', -amt)
  redis.call('HDEL', KEYS[1], 'r:' .. m)
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
";

/// Reserve: KEYS[1] account hash, KEYS[2] expiry set, KEYS[3] the reservation's settlement
/// marker; ARGV[1] limit, ARGV[2] micros (0: only the standing), ARGV[3] member, ARGV[4] lifetime
/// ms, ARGV[5] the spend to start a new account with, or `-` when the caller has not read it.
/// Returns `{fits, spent, reserved}`, with `fits` -1 when the account is missing and no spend
/// was given: the caller reads its ledger and calls again, so that an account Redis lost (it
/// restarted empty) starts again from the ledger's spend, never from 0. A reservation whose
/// settlement already ran (its request failed while this script waited in a stalled Redis) is
/// not made.
pub fn reserve() -> String {
    format!(
        "{NOW}
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[5] == '-' then return {{-1, 0, 0}} end
  redis.call('HSET', KEYS[1], 'spent', ARGV[5], 'reserved', 0)
end
{PURGE}
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local micros = tonumber(ARGV[2])
if micros == 0 then return {{1, spent, reserved}} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {{0, spent, reserved}} end
if spent + reserved + micros > tonumber(ARGV[1]) then return {{0, spent, reserved}} end
redis.call('HINCRBY', KEYS[1], 'reserved', micros)
redis.call('HSET', KEYS[1], 'r:' .. ARGV[3], micros)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
return {{1, spent, reserved + micros}}
"
    )
}

/// Settle: KEYS[1] account hash, KEYS[2] expiry set, KEYS[3] the settlement's marker; ARGV[1]
/// member, ARGV[2] cost. The reservation (if it has not expired) is released and the cost added
/// to the spend, once: a settlement sent again (its reply was lost) finds its marker and changes
/// nothing.
pub const SETTLE: &str = r"
if not redis.call('SET', KEYS[3], 1, 'PX', 86400000, 'NX') then return 0 end
local amt = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if amt then
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(amt))
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
return 1
";

/// Renew: KEYS[1] expiry set; ARGV[1] lifetime ms, ARGV[2..] members still in flight.
pub fn renew() -> String {
    format!(
        "{NOW}
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
return 1
"
    )
}

/// GCRA for requests per minute, with a burst of the whole minute: KEYS[1] the key's theoretical
/// arrival time; ARGV[1] rpm. Returns `{allowed, wait_ms}`.
pub fn rpm() -> String {
    format!(
        "{NOW}
local t = 60000 / tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - (60000 - t) - now
if wait > 0 then return {{0, math.ceil(wait)}} end
local new = tat + t
redis.call('SET', KEYS[1], tostring(new), 'PX', math.ceil(new - now) + 1000)
return {{1, 0}}
"
    )
}

/// The refill of a tokens-per-minute bucket, shared by [`tpm`] and [`tpm_settle`].
const REFILL: &str = r"
local h = redis.call('HMGET', KEYS[1], 'level', 'at', 'cap')
local level, at = tonumber(h[1]), tonumber(h[2])
if level == nil or tonumber(h[3]) ~= cap then level = cap; at = now end
if cap > 0 then level = math.min(cap, level + (now - at) * cap / 60000) end
";

/// Admit tokens: KEYS[1] the key's bucket; ARGV[1] tpm, ARGV[2] tokens. A request larger than a
/// minute is admitted with a full bucket. Returns `{admitted, wait_ms}`.
pub fn tpm() -> String {
    format!(
        "{NOW}
local cap, want = tonumber(ARGV[1]), tonumber(ARGV[2])
{REFILL}
local need = math.min(want, cap)
local ok = cap > 0 and level >= need
if ok then level = level - want end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', now, 'cap', cap)
redis.call('PEXPIRE', KEYS[1], 600000)
if ok then return {{1, 0}} end
if cap == 0 then return {{0, 60000}} end
return {{0, math.ceil((need - level) * 60000 / cap)}}
"
    )
}

/// Settle tokens: KEYS[1] the key's bucket; ARGV[1] admitted minus used (may be negative).
pub fn tpm_settle() -> String {
    format!(
        "{NOW}
local cap = tonumber(redis.call('HGET', KEYS[1], 'cap') or '-1')
if cap < 0 then return 0 end
{REFILL}
level = math.min(cap, level + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', now)
return 1
"
    )
}

/// A breaker opening: KEYS[1] the openings hash; ARGV[1] model, ARGV[2] cooldown ms, ARGV[3] the
/// message to publish, ARGV[4] the channel.
pub fn open() -> String {
    format!(
        "{NOW}
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"
    )
}

/// The openings still running: KEYS[1] the openings hash. Returns `{model, remaining_ms, ...}`.
pub fn openings() -> String {
    format!(
        "{NOW}
local out = {{}}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local left = tonumber(all[i + 1]) - now
  if left > 0 then table.insert(out, all[i]); table.insert(out, left) else redis.call('HDEL', KEYS[1], all[i]) end
end
return out
"
    )
}

/// Store a run-time key's record unless another live record has its name: KEYS[1] the records
/// hash, KEYS[2] the version; ARGV[1] id, ARGV[2] the record (JSON), ARGV[3] its name, ARGV[4]
/// `1` when it is live. Returns 1 when stored, 0 when the name is taken.
pub const PUT_KEY: &str = r"
if ARGV[4] == '1' then
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
    local ok, r = pcall(cjson.decode, v)
    if ok and r.id ~= ARGV[1] and r.name == ARGV[3] and (r.revoked_at_ms == nil or r.revoked_at_ms == cjson.null) then
      return 0
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1
";

/// Put back records that Redis lost (it restarted empty): KEYS[1] the records hash, KEYS[2] the
/// version; ARGV pairs of id and record. Only ids Redis does not have are written (a key is
/// never deleted, so a missing id is a lost one). Returns how many were put back.
pub const RESTORE_KEYS: &str = r"
local n = 0
for i = 1, #ARGV, 2 do n = n + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
if n > 0 then redis.call('INCR', KEYS[2]) end
return n
";
