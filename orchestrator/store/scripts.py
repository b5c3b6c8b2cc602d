"""The Lua scripts behind JobStore's atomic steps (each runs inside Redis as one indivisible operation)."""

# One atomic compare-and-set: check the current state is one of the expected ones, bump the version,
# write state plus extra fields, append the typed event to the job's stream, and (for a terminal job
# state) take the job off the active set, all in one step. KEYS[4], when given, is the notification outbox:
# the event is mirrored there in the same step, so a notification is never lost between the two.
TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {-1, ''} end
local ok = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == cur then ok = true end end
if not ok then return {0, cur} end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', ARGV[3])
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[7] ~= '' then redis.call('SREM', KEYS[3], ARGV[7]) end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'kind', ARGV[4], 'ts', ARGV[3], 'data', ARGV[5])
if KEYS[4] then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 'job', ARGV[8], 'event', id, 'kind', ARGV[4], 'ts', ARGV[3],
             'data', ARGV[5])
end
return {1, tostring(v), id}
"""

# Create a QUEUED job with its first run in one step: its record (with the next queue number), the run's, the two
# creation events, its place in the job indexes, the active set, the safety net's schedule and the queue (and its
# sweep's member list); the queue's head after it (a submission that heads the queue asks for its own provision).
# {0} when the id is taken (the caller draws another). One round trip: the submit path's hottest step.
# KEYS: job, run, events, jobs, owned, active, due, queue, seq[, sweep members, sweeps]
# ARGV: now, events maxlen, job id, created kind, created data, run kind, run data, sweep id, n, n job field/value
#       pairs, m, m run field/value pairs
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local seq = redis.call('INCR', KEYS[9])
local now, maxlen, id = ARGV[1], ARGV[2], ARGV[3]
local i = 9
local n = tonumber(ARGV[i])
redis.call('HSET', KEYS[1], 'seq', seq, unpack(ARGV, i + 1, i + 2 * n))
i = i + 2 * n + 1
local m = tonumber(ARGV[i])
redis.call('HSET', KEYS[2], unpack(ARGV, i + 1, i + 2 * m))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'kind', ARGV[4], 'ts', now, 'data', ARGV[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'kind', ARGV[6], 'ts', now, 'data', ARGV[7])
redis.call('ZADD', KEYS[4], now, id)
redis.call('ZADD', KEYS[5], now, id)
redis.call('SADD', KEYS[6], id)
redis.call('ZADD', KEYS[7], now, id)
redis.call('ZADD', KEYS[8], seq, id)
if KEYS[10] then
  redis.call('RPUSH', KEYS[10], id)
  redis.call('ZADD', KEYS[11], 'NX', now, ARGV[8])
end
return {1, seq, redis.call('ZRANGE', KEYS[8], 0, 0)[1]}
"""

# Node leases keep three indexes beside the pool hash (node -> job, '' when free), so that a lease costs the
# nodes it takes, not the inventory (with 10,000 nodes a scan of the pool took 30 ms inside Redis per lease):
#   free:   a sorted set of the free, undrained nodes of the inventory, scored by inventory position (the
#           first free nodes in inventory order are leased first, as before);
#   held:   job -> its leased nodes (JSON), read by a repeated lease and by release;
#   where:  node -> inventory position, and '#' -> the fingerprint of the inventory the indexes were built on.
# SYNC_POOL rebuilds them from the pool hash and the drains; every other change keeps them right, except the
# rare ones (a drain, an undrain, a node replacement), which drop the fingerprint so the next lease rebuilds.

# KEYS: pool, drained, free, held, where; ARGV: fingerprint, inventory names...
SYNC_POOL = """
local pos = {}
for i = 2, #ARGV do redis.call('HSETNX', KEYS[1], ARGV[i], ''); pos[ARGV[i]] = i - 1 end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
for i = 2, #ARGV do redis.call('HSET', KEYS[5], ARGV[i], i - 1) end
local pool = redis.call('HGETALL', KEYS[1])
local held = {}
for i = 1, #pool, 2 do
  local node, job = pool[i], pool[i + 1]
  if job ~= '' then
    held[job] = held[job] or {}
    table.insert(held[job], node)
  elseif pos[node] and redis.call('HEXISTS', KEYS[2], node) == 0 then
    redis.call('ZADD', KEYS[3], pos[node], node)
  end
end
for job, nodes in pairs(held) do
  table.sort(nodes, function(a, b) return (pos[a] or 1e15) < (pos[b] or 1e15) end)
  redis.call('HSET', KEYS[4], job, cjson.encode(nodes))
end
redis.call('HSET', KEYS[5], '#', ARGV[1])
return 1
"""

# Lease `n` free nodes to a job, strictly in queue order; idempotent for a job that already holds nodes.
# '!inventory' when the indexes were built on another inventory (the caller runs SYNC_POOL and asks again).
# KEYS: pool, queue, free, held, where; ARGV: job id, count, fingerprint
ALLOCATE = """
if redis.call('HGET', KEYS[5], '#') ~= ARGV[3] then return {'!inventory'} end
local mine = redis.call('HGET', KEYS[4], ARGV[1])
if mine then return cjson.decode(mine) end
local head = redis.call('ZRANGE', KEYS[2], 0, 0)
if head[1] ~= ARGV[1] then return {'!queued'} end
local want = tonumber(ARGV[2])
local free = redis.call('ZRANGE', KEYS[3], 0, want - 1)
if #free < want then return {'!nodes'} end
for _, n in ipairs(free) do redis.call('HSET', KEYS[1], n, ARGV[1]) end
redis.call('ZREM', KEYS[3], unpack(free))
redis.call('HSET', KEYS[4], ARGV[1], cjson.encode(free))
redis.call('ZREM', KEYS[2], ARGV[1])
return free
"""

# Free every node the job holds (back into the free index at their inventory position, unless drained or no
# longer in the inventory) and take it off the queue. Without current indexes: a scan of the pool, and the
# next lease rebuilds them. KEYS: pool, queue, free, held, where, drained; ARGV: job id
RELEASE = """
local n = 0
local mine = redis.call('HGET', KEYS[4], ARGV[1])
if redis.call('HEXISTS', KEYS[5], '#') == 1 and mine then
  for _, node in ipairs(cjson.decode(mine)) do
    if redis.call('HGET', KEYS[1], node) == ARGV[1] then
      redis.call('HSET', KEYS[1], node, '')
      n = n + 1
      local at = redis.call('HGET', KEYS[5], node)
      if at and redis.call('HEXISTS', KEYS[6], node) == 0 then redis.call('ZADD', KEYS[3], at, node) end
    end
  end
else
  local pool = redis.call('HGETALL', KEYS[1])
  for i = 1, #pool, 2 do
    if pool[i + 1] == ARGV[1] then redis.call('HSET', KEYS[1], pool[i], ''); n = n + 1 end
  end
  redis.call('HDEL', KEYS[5], '#')
end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
"""

# A job's silent nodes: drain them (no job gets them until an admin undrains) and swap each one's lease for a
# free node, in place in the job's node list (a new head stays first). All or nothing unless ARGV[3] is '1'
# (then a dead node without a replacement is just dropped). A second call finds nothing left to swap.
# KEYS: pool, drained, job, where (its fingerprint dropped); ARGV: job id, drain note, allow fewer, dead count,
# dead..., inventory...
REPLACE = """
local nodes = cjson.decode(redis.call('HGET', KEYS[3], 'nodes') or '[]')
local ndead = tonumber(ARGV[4])
local dead = {}
for i = 5, 4 + ndead do dead[ARGV[i]] = true; redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[2]) end
local free = {}
for i = 5 + ndead, #ARGV do
  local n = ARGV[i]
  if not dead[n] and redis.call('HGET', KEYS[1], n) == '' and redis.call('HEXISTS', KEYS[2], n) == 0 then
    table.insert(free, n) end
end
local kept, swaps, missing = {}, {}, 0
for _, n in ipairs(nodes) do
  if dead[n] then
    local r = table.remove(free, 1) or ''
    if r == '' then missing = missing + 1 else table.insert(kept, r) end
    table.insert(swaps, n); table.insert(swaps, r)
  else table.insert(kept, n) end
end
if #swaps == 0 then return {'!none'} end
if (missing > 0 and ARGV[3] ~= '1') or #kept == 0 then return {'!nofree'} end
for i = 1, #swaps, 2 do
  if redis.call('HGET', KEYS[1], swaps[i]) == ARGV[1] then redis.call('HSET', KEYS[1], swaps[i], '') end
  if swaps[i + 1] ~= '' then redis.call('HSET', KEYS[1], swaps[i + 1], ARGV[1]) end
end
redis.call('HSET', KEYS[3], 'nodes', cjson.encode(kept))
redis.call('HDEL', KEYS[4], '#')
return swaps
"""

# HSETNX, except that an empty string (a cleared field) also counts as unset.
SET_ONCE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= '' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Set one field of an existing hash only if it holds something else: 1 when this call changed it (so the caller
# alone reports the change, however many workers race to), 0 otherwise. KEYS: the hash; ARGV: field, value.
SET_IF_CHANGED = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
