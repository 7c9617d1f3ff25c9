-- Shared by every filegate script. All keys live under the metadata prefix P, whose hash tag puts
-- them in one Redis Cluster slot; KEYS[1] (P .. 'ctr') is declared so the call is routed there.
-- ARGV[1] = P, ARGV[2] = now (ms), ARGV[3] = grace (ms), ARGV[4] = outbox limit (0 = none),
-- ARGV[5] = event origin (JSON). Script-specific arguments start at ARGV[6].
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local GRACE = tonumber(ARGV[3])
local OUTBOX_LIMIT = tonumber(ARGV[4])
local ORIGIN = ARGV[5]
local ROOT = '1'

-- `code` is an ErrorKind's name (`not_found`), or a Reason's (`outbox_full`), which carries its kind:
-- the caller tells a full outbox by its code, not by the words of the message.
local function fail(code, msg)
  error({err = 'FG:' .. code .. ' ' .. msg})
end

local function num(x)
  return string.format('%d', x)
end

local function split(path)
  local t = {}
  for s in string.gmatch(path, '[^/]+') do t[#t + 1] = s end
  return t
end

local function shown(segs, n)
  return '/' .. table.concat(segs, '/', 1, n)
end

-- The directory inode at segs[1..n]; fails when a component is missing or is a file.
local function walk(segs, n)
  local ino = ROOT
  for i = 1, n do
    local child = redis.call('HGET', P .. 'd:' .. ino, segs[i])
    if not child then fail('not_found', shown(segs, i) .. ': no such file or directory') end
    if redis.call('HGET', P .. 'i:' .. child, 'k') ~= 'd' then
      fail('not_a_directory', shown(segs, i) .. ': not a directory')
    end
    ino = child
  end
  return ino
end

-- Inode of the entry at the path, or false. For the root: ROOT.
local function lookup(segs)
  if #segs == 0 then return ROOT end
  local parent = walk(segs, #segs - 1)
  return redis.call('HGET', P .. 'd:' .. parent, segs[#segs]) or false, parent
end

-- The user an event is counted against (the origin's `user`; '' when there is none).
local function origin_user(origin)
  if origin == nil or origin == '' then return '' end
  local ok, o = pcall(cjson.decode, origin)
  if ok and type(o) == 'table' and type(o.user) == 'string' then return o.user end
  return ''
end

local USER = origin_user(ORIGIN)

-- Refuses a change while the outbox is full, or while this change's user alone has half of it
-- waiting: one user cannot fill the outbox for everyone (e.g. while the broker is down).
-- Undelivered events per user are counted in the hash P .. 'pu' (by emit, and by ack).
local function check_outbox()
  if OUTBOX_LIMIT <= 0 then return end
  local seq = tonumber(redis.call('HGET', P .. 'ctr', 'seq') or '0')
  local acked = tonumber(redis.call('HGET', P .. 'ctr', 'acked') or '0')
  if seq - acked >= OUTBOX_LIMIT then
    fail('outbox_full', 'event outbox is full: ' .. num(seq - acked) ..
      ' events are waiting for delivery; changes are refused until the publisher catches up')
  end
  local share = math.max(1, math.floor(OUTBOX_LIMIT / 2))
  local mine = tonumber(redis.call('HGET', P .. 'pu', USER) or '0')
  if mine >= share then
    fail('unavailable', 'event outbox: ' .. num(mine) .. ' events of this user are waiting for delivery, ' ..
      'half of storage.outbox_limit; this user\'s changes are refused until the publisher catches up')
  end
end

local function emit(kind, path, old, size, sha, complete, version, replaced)
  redis.call('HINCRBY', P .. 'pu', USER, 1)
  local seq = redis.call('HINCRBY', P .. 'ctr', 'seq', 1)
  redis.call('XADD', P .. 'ev', num(seq) .. '-1', 't', kind, 'p', path, 'o', old or '',
    's', size or '', 'h', sha or '', 'c', complete or '', 'v', version or '',
    'r', replaced and '1' or '0', 'x', ORIGIN, 'u', USER)
  return seq
end

-- Drops acknowledged events beyond the history's bounds: more than `keep` behind the newest, or
-- committed before `cutoff` (ms; looked at in batches from the old end). Unacknowledged events, and
-- events a consumer cursor has not passed, are never dropped, and events go only from the old end, so the first one left says what is gone.
local function trim_history(keep, cutoff)
  local f = redis.call('HMGET', P .. 'ctr', 'seq', 'acked')
  local last = tonumber(f[1] or '0')
  local acked = tonumber(f[2] or '0')
  -- A consumer with a cursor (a webhook) still needs every event after it.
  for _, held in ipairs(redis.call('HVALS', P .. 'cur')) do acked = math.min(acked, tonumber(held)) end
  local upto = math.max(0, math.min(acked, last - keep))
  -- Events older than the cutoff, from the old end; usually the first one is young enough, so
  -- the look starts with one event and grows (reading 1,024 events on every acknowledgement cost
  -- Redis more than the commits did).
  local count = 1
  while upto < acked do
    local old = redis.call('XRANGE', P .. 'ev', num(upto + 1) .. '-0', num(acked) .. '-1', 'COUNT', count)
    if #old == 0 then break end
    local young = false
    for _, entry in ipairs(old) do
      local fields = entry[2]
      local time_ms = nil
      for i = 1, #fields, 2 do
        if fields[i] == 'x' then
          local ok, origin = pcall(cjson.decode, fields[i + 1])
          if ok and type(origin) == 'table' then time_ms = tonumber(origin.time_ms) end
        end
      end
      if time_ms == nil or time_ms >= cutoff then young = true break end
      upto = tonumber(string.match(entry[1], '^(%d+)'))
    end
    if young or count >= 1024 then break end
    count = math.min(count * 16, 1024)
  end
  if upto > 0 then
    redis.call('XTRIM', P .. 'ev', 'MINID', num(upto + 1) .. '-0')
  end
end

local function each_chunk(map, fn)
  for start, count in string.gmatch(map or '', '(%d+)%+(%d+)') do
    start = tonumber(start)
    if start ~= 0 then
      for id = start, start + tonumber(count) - 1 do fn(id) end
    end
  end
end

local function new_version(size, chunk_size, map)
  local vid = redis.call('HINCRBY', P .. 'ctr', 'vid', 1)
  redis.call('HSET', P .. 'v:' .. vid, 's', size, 'cs', chunk_size, 'm', map, 'r', 1)
  each_chunk(map, function(id) redis.call('HINCRBY', P .. 'cr', num(id), 1) end)
  return vid
end

-- Drops one reference to a version; at zero its chunks lose a reference, and chunks nobody
-- references any more are queued for deletion after the grace period (readers may still be on them).
local function release_version(vid)
  if not vid or vid == '' or vid == '0' then return end
  local key = P .. 'v:' .. vid
  if redis.call('EXISTS', key) == 0 then return end
  if redis.call('HINCRBY', key, 'r', -1) > 0 then return end
  local due = NOW + GRACE
  each_chunk(redis.call('HGET', key, 'm'), function(id)
    local field = num(id)
    if redis.call('HINCRBY', P .. 'cr', field, -1) <= 0 then
      redis.call('HDEL', P .. 'cr', field)
      redis.call('ZADD', P .. 'gc', due, field)
    end
  end)
  redis.call('DEL', key)
end

-- Ends a session (write session with a base, or read pin): releases its base version.
local function end_session(sid)
  local key = P .. 's:' .. sid
  local s = redis.call('HMGET', key, 'o', 'b')
  if not s[1] then return false end
  release_version(s[2])
  redis.call('DEL', key)
  redis.call('SREM', P .. 'os:' .. s[1], sid)
  return true
end

-- Chunks a session wrote that no version will ever reference: deleted at once (nobody saw them).
local function discard_chunks(list)
  for id in string.gmatch(list or '', '%d+') do redis.call('ZADD', P .. 'gc', NOW, id) end
end

-- Fails unless the gateway's lease is still held: once another gateway reclaimed it, the chunks
-- it wrote may be gone and must not be published.
local function check_owner(owner)
  if not redis.call('ZSCORE', P .. 'owners', owner) then
    fail('unavailable', 'this gateway lost its storage lease (no contact with Redis for longer than storage.orphan_timeout) and its uploads were reclaimed; upload again')
  end
end

local function link(parent, name, ino)
  redis.call('HSET', P .. 'd:' .. parent, name, ino)
  redis.call('ZADD', P .. 'l:' .. parent, 0, name)
  redis.call('HSET', P .. 'i:' .. parent, 'm', NOW)
end

local function unlink(parent, name)
  redis.call('HDEL', P .. 'd:' .. parent, name)
  redis.call('ZREM', P .. 'l:' .. parent, name)
  redis.call('HSET', P .. 'i:' .. parent, 'm', NOW)
end

local function new_inode(kind)
  return redis.call('HINCRBY', P .. 'ctr', 'ino', 1)
end

local function stat_fields(ino)
  return redis.call('HMGET', P .. 'i:' .. ino, 'k', 'm', 's', 'v', 'h', 'c')
end
