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

# Lease `n` free nodes to a job, strictly in queue order; idempotent for a job that already holds nodes.
ALLOCATE = """
for i = 3, #ARGV do redis.call('HSETNX', KEYS[1], ARGV[i], '') end
local mine = {}
for i = 3, #ARGV do if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then table.insert(mine, ARGV[i]) end end
if #mine > 0 then return mine end
local head = redis.call('ZRANGE', KEYS[2], 0, 0)
if head[1] ~= ARGV[1] then return {'!queued'} end
local want = tonumber(ARGV[2])
local free = {}
for i = 3, #ARGV do
  if #free < want and redis.call('HGET', KEYS[1], ARGV[i]) == '' and redis.call('HEXISTS', KEYS[3], ARGV[i]) == 0
  then table.insert(free, ARGV[i]) end
end
if #free < want then return {'!nodes'} end
for _, n in ipairs(free) do redis.call('HSET', KEYS[1], n, ARGV[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return free
"""

RELEASE = """
local pool = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #pool, 2 do
  if pool[i + 1] == ARGV[1] then redis.call('HSET', KEYS[1], pool[i], ''); n = n + 1 end
end
redis.call('ZREM', KEYS[2], ARGV[1])
return n
"""

# A job's silent nodes: drain them (no job gets them until an admin undrains) and swap each one's lease for a
# free node, in place in the job's node list (a new head stays first). All or nothing unless ARGV[3] is '1'
# (then a dead node without a replacement is just dropped). A second call finds nothing left to swap.
# KEYS: pool, drained, job; ARGV: job id, drain note, allow fewer, dead count, dead..., inventory...
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
