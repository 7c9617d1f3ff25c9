--@ init
-- Creates the root directory and the counters once; harmless to run again.
redis.call('HSETNX', P .. 'i:' .. ROOT, 'k', 'd')
redis.call('HSETNX', P .. 'i:' .. ROOT, 'm', NOW)
redis.call('HSETNX', P .. 'ctr', 'ino', 1)
return 1

--@ stat
-- ARGV[6] path -> {k, m, s, v, h, c}
local segs = split(ARGV[6])
local ino = lookup(segs)
if not ino then fail('not_found', shown(segs, #segs) .. ': no such file or directory') end
return stat_fields(ino)

--@ list
-- ARGV[6] dir path, ARGV[7] after ('' = from the start), ARGV[8] limit
-- -> {more, name, k, m, s, v, h, c, name, ...}
local segs = split(ARGV[6])
local ino = lookup(segs)
if not ino then fail('not_found', shown(segs, #segs) .. ': no such file or directory') end
if redis.call('HGET', P .. 'i:' .. ino, 'k') ~= 'd' then
  fail('not_a_directory', shown(segs, #segs) .. ': not a directory')
end
local limit = tonumber(ARGV[8])
local from = '-'
if ARGV[7] ~= '' then from = '(' .. ARGV[7] end
local names = redis.call('ZRANGEBYLEX', P .. 'l:' .. ino, from, '+', 'LIMIT', 0, limit + 1)
local out = {'0'}
if #names > limit then out[1] = '1' end
for i = 1, math.min(#names, limit) do
  local child = redis.call('HGET', P .. 'd:' .. ino, names[i])
  local f = stat_fields(child)
  out[#out + 1] = names[i]
  for j = 1, 6 do out[#out + 1] = f[j] or '' end
end
return out

--@ mkdir
-- ARGV[6] path -> seq
local segs = split(ARGV[6])
if #segs == 0 then fail('already_exists', '/: the root directory always exists') end
check_outbox()
local child, parent = lookup(segs)
if child then
  local kind = redis.call('HGET', P .. 'i:' .. child, 'k')
  fail('already_exists', shown(segs, #segs) .. ': a ' .. (kind == 'd' and 'directory' or 'file') .. ' with that name exists')
end
local ino = new_inode()
redis.call('HSET', P .. 'i:' .. ino, 'k', 'd', 'm', NOW, 'p', parent)
link(parent, segs[#segs], ino)
return emit('dir.created', shown(segs, #segs))

--@ rmdir
-- ARGV[6] path -> seq
local segs = split(ARGV[6])
if #segs == 0 then fail('invalid_argument', '/: the root directory cannot be removed') end
check_outbox()
local child, parent = lookup(segs)
if not child then fail('not_found', shown(segs, #segs) .. ': no such file or directory') end
if redis.call('HGET', P .. 'i:' .. child, 'k') ~= 'd' then
  fail('not_a_directory', shown(segs, #segs) .. ': not a directory (delete files with delete)')
end
if redis.call('HLEN', P .. 'd:' .. child) > 0 then
  fail('directory_not_empty', shown(segs, #segs) .. ': directory not empty')
end
unlink(parent, segs[#segs])
redis.call('DEL', P .. 'i:' .. child, P .. 'd:' .. child, P .. 'l:' .. child)
return emit('dir.deleted', shown(segs, #segs))

--@ delete
-- ARGV[6] path -> seq
local segs = split(ARGV[6])
if #segs == 0 then fail('is_a_directory', '/: is a directory') end
check_outbox()
local child, parent = lookup(segs)
if not child then fail('not_found', shown(segs, #segs) .. ': no such file or directory') end
local f = redis.call('HMGET', P .. 'i:' .. child, 'k', 's', 'v', 'h', 'c')
if f[1] ~= 'f' then fail('is_a_directory', shown(segs, #segs) .. ': is a directory (remove it with rmdir)') end
unlink(parent, segs[#segs])
release_version(f[3])
redis.call('DEL', P .. 'i:' .. child)
return emit('file.deleted', shown(segs, #segs), nil, f[2], f[4], f[5], f[3])

--@ rename
-- ARGV[6] from, ARGV[7] to, ARGV[8] replace ('1'/'0') -> seq
-- The caller has already refused moving a directory into its own subtree and renaming the root.
local from = split(ARGV[6])
local to = split(ARGV[7])
check_outbox()
local src, src_parent = lookup(from)
if not src then fail('not_found', shown(from, #from) .. ': no such file or directory') end
local src_f = redis.call('HMGET', P .. 'i:' .. src, 'k', 's', 'v', 'h', 'c')
local is_dir = src_f[1] == 'd'
local dst, dst_parent = lookup(to)
local replaced = false
if dst then
  if dst == src then
    -- Renaming onto itself changes nothing (POSIX), but is still reported.
    return emit(is_dir and 'dir.renamed' or 'file.renamed', shown(to, #to), shown(from, #from),
      src_f[2], src_f[4], src_f[5], src_f[3], false)
  end
  if ARGV[8] ~= '1' then fail('already_exists', shown(to, #to) .. ': already exists') end
  local dst_kind = redis.call('HGET', P .. 'i:' .. dst, 'k')
  if is_dir and dst_kind ~= 'd' then fail('not_a_directory', shown(to, #to) .. ': is a file; cannot replace it with a directory') end
  if not is_dir and dst_kind == 'd' then fail('is_a_directory', shown(to, #to) .. ': is a directory; cannot replace it with a file') end
  if dst_kind == 'd' then
    if redis.call('HLEN', P .. 'd:' .. dst) > 0 then fail('directory_not_empty', shown(to, #to) .. ': directory not empty') end
    redis.call('DEL', P .. 'i:' .. dst, P .. 'd:' .. dst, P .. 'l:' .. dst)
  else
    release_version(redis.call('HGET', P .. 'i:' .. dst, 'v'))
    redis.call('DEL', P .. 'i:' .. dst)
  end
  unlink(dst_parent, to[#to])
  replaced = true
end
unlink(src_parent, from[#from])
link(dst_parent, to[#to], src)
redis.call('HSET', P .. 'i:' .. src, 'p', dst_parent)
return emit(is_dir and 'dir.renamed' or 'file.renamed', shown(to, #to), shown(from, #from),
  src_f[2], src_f[4], src_f[5], src_f[3], replaced)

--@ set_mtime
-- ARGV[6] path, ARGV[7] mtime -> seq
local segs = split(ARGV[6])
check_outbox()
local ino = lookup(segs)
if not ino then fail('not_found', shown(segs, #segs) .. ': no such file or directory') end
redis.call('HSET', P .. 'i:' .. ino, 'm', ARGV[7])
local f = redis.call('HMGET', P .. 'i:' .. ino, 'k', 's', 'v', 'h', 'c')
if f[1] == 'd' then return emit('file.attributes', shown(segs, #segs)) end
return emit('file.attributes', shown(segs, #segs), nil, f[2], f[4], f[5], f[3])

--@ open_session
-- ARGV[6] path, ARGV[7] owner, ARGV[8] create, ARGV[9] create_new, ARGV[10] truncate
-- -> {sid ('0' when nothing needs pinning), base vid, size, chunk size, map, sha, complete, mtime}
-- Checks that the upload can land there; a session is registered only to pin a base version.
local segs = split(ARGV[6])
if #segs == 0 then fail('is_a_directory', '/: is a directory') end
local child = lookup(segs)
if child then
  local f = redis.call('HMGET', P .. 'i:' .. child, 'k', 'v', 'h', 'c', 'm')
  if f[1] == 'd' then fail('is_a_directory', shown(segs, #segs) .. ': is a directory') end
  if ARGV[9] == '1' then fail('already_exists', shown(segs, #segs) .. ': already exists') end
  if ARGV[10] ~= '1' then
    local v = redis.call('HMGET', P .. 'v:' .. f[2], 's', 'cs', 'm')
    if not v[1] then fail('internal', shown(segs, #segs) .. ': version ' .. f[2] .. ' is missing') end
    check_owner(ARGV[7])
    redis.call('HINCRBY', P .. 'v:' .. f[2], 'r', 1)
    local sid = redis.call('HINCRBY', P .. 'ctr', 'sid', 1)
    redis.call('HSET', P .. 's:' .. sid, 'o', ARGV[7], 'b', f[2])
    redis.call('SADD', P .. 'os:' .. ARGV[7], sid)
    return {num(sid), f[2], v[1], v[2], v[3], f[3] or '', f[4] or '1', f[5] or '0'}
  end
elseif ARGV[8] ~= '1' then
  fail('not_found', shown(segs, #segs) .. ': no such file')
end
return {'0', '0', '0', '0', '', '', '1', '0'}

--@ commit
-- ARGV[6] path, ARGV[7] sid ('0' = none), ARGV[8] size, ARGV[9] chunk size, ARGV[10] map,
-- ARGV[11] sha, ARGV[12] complete, ARGV[13] mtime, ARGV[14] owner, ARGV[15] chunks written but
-- superseded, ARGV[16] a chunk key that must exist ('' = none; standalone Redis only, see
-- put_and_commit) -> {seq, vid, created}
local segs = split(ARGV[6])
if #segs == 0 then fail('is_a_directory', '/: is a directory') end
if ARGV[16] ~= '' and redis.call('EXISTS', ARGV[16]) == 0 then
  fail('unavailable', 'the file\'s data could not be stored in Redis; nothing was changed')
end
check_outbox()
check_owner(ARGV[14])
local sid = ARGV[7]
if sid ~= '0' and redis.call('EXISTS', P .. 's:' .. sid) == 0 then
  fail('unavailable', 'the write session expired (this gateway lost contact with Redis for longer than storage.orphan_timeout); upload again')
end
local child, parent = lookup(segs)
if child and redis.call('HGET', P .. 'i:' .. child, 'k') == 'd' then
  fail('is_a_directory', shown(segs, #segs) .. ': is a directory')
end
local map = ARGV[10]
local vid = new_version(ARGV[8], ARGV[9], map)
if sid ~= '0' then end_session(sid) end
discard_chunks(ARGV[15])
local created = not child
if created then
  child = new_inode()
  redis.call('HSET', P .. 'i:' .. child, 'k', 'f', 'p', parent)
  link(parent, segs[#segs], child)
else
  release_version(redis.call('HGET', P .. 'i:' .. child, 'v'))
end
redis.call('HSET', P .. 'i:' .. child, 'm', ARGV[13], 'v', vid, 's', ARGV[8], 'h', ARGV[11], 'c', ARGV[12])
local kind = 'file.incomplete'
if ARGV[12] == '1' then kind = created and 'file.created' or 'file.modified' end
local seq = emit(kind, shown(segs, #segs), nil, ARGV[8], ARGV[11], ARGV[12], num(vid), not created)
return {seq, vid, created and 1 or 0}

--@ end_session
-- ARGV[6] sid ('0' = none), ARGV[7] chunks the session wrote -> 1
if ARGV[6] ~= '0' then end_session(ARGV[6]) end
discard_chunks(ARGV[7])
return 1

--@ open_read
-- ARGV[6] path, ARGV[7] owner ('' = do not pin)
-- -> {vid, size, chunk size, map, sha, complete, mtime, pin sid or '0'}
local segs = split(ARGV[6])
local ino = lookup(segs)
if not ino then fail('not_found', shown(segs, #segs) .. ': no such file') end
local f = redis.call('HMGET', P .. 'i:' .. ino, 'k', 'v', 'h', 'c', 'm')
if f[1] ~= 'f' then fail('is_a_directory', shown(segs, #segs) .. ': is a directory') end
local v = redis.call('HMGET', P .. 'v:' .. f[2], 's', 'cs', 'm')
if not v[1] then fail('internal', shown(segs, #segs) .. ': version ' .. f[2] .. ' is missing') end
local pin = '0'
-- Reads of one chunk finish within the grace period; longer ones pin the version.
if ARGV[7] ~= '' and tonumber(v[1]) > tonumber(v[2]) then
  pin = num(redis.call('HINCRBY', P .. 'ctr', 'sid', 1))
  redis.call('HSET', P .. 's:' .. pin, 'o', ARGV[7], 'b', f[2])
  redis.call('SADD', P .. 'os:' .. ARGV[7], pin)
  redis.call('HINCRBY', P .. 'v:' .. f[2], 'r', 1)
end
return {f[2], v[1], v[2], v[3], f[3] or '', f[4] or '1', f[5] or '0', pin}

--@ ack
-- ARGV[6] seq: everything up to it was delivered, ARGV[7] history max (events),
-- ARGV[8] history age (ms) -> the acknowledged seq
local acked = tonumber(redis.call('HGET', P .. 'ctr', 'acked') or '0')
local upto = tonumber(ARGV[6])
local last = tonumber(redis.call('HGET', P .. 'ctr', 'seq') or '0')
if upto > last then fail('invalid_argument', 'cannot acknowledge event ' .. num(upto) .. ': the newest is ' .. num(last)) end
if upto > acked then
  -- Each delivered event leaves its user's count of waiting events.
  local from = acked + 1
  while from <= upto do
    local batch = redis.call('XRANGE', P .. 'ev', num(from) .. '-0', num(upto) .. '-1', 'COUNT', 1000)
    if #batch == 0 then break end
    local per_user = {}
    for _, entry in ipairs(batch) do
      -- The user is field 'u' (no JSON to decode on this path); events written before it
      -- existed have it only inside their origin, 'x'.
      local fields, user, origin = entry[2], nil, nil
      for i = 1, #fields, 2 do
        if fields[i] == 'u' then user = fields[i + 1] elseif fields[i] == 'x' then origin = fields[i + 1] end
      end
      user = user or origin_user(origin)
      per_user[user] = (per_user[user] or 0) + 1
    end
    for u, n in pairs(per_user) do
      if redis.call('HINCRBY', P .. 'pu', u, -n) <= 0 then redis.call('HDEL', P .. 'pu', u) end
    end
    from = tonumber(string.match(batch[#batch][1], '^(%d+)')) + 1
  end
  redis.call('HSET', P .. 'ctr', 'acked', num(upto))
  trim_history(tonumber(ARGV[7]), NOW - tonumber(ARGV[8]))
  acked = upto
end
return acked

--@ trim_history
-- ARGV[6] history max (events), ARGV[7] history age (ms) -> 1
trim_history(tonumber(ARGV[6]), NOW - tonumber(ARGV[7]))
return 1

--@ outbox_status
-- -> {last seq, acked seq}
local f = redis.call('HMGET', P .. 'ctr', 'seq', 'acked')
return {f[1] or '0', f[2] or '0'}

--@ heartbeat
-- ARGV[6] owner, ARGV[7] lease (ms) -> 1 if the owner was still known, 0 if it had been reclaimed
local known = redis.call('ZSCORE', P .. 'owners', ARGV[6])
redis.call('ZADD', P .. 'owners', NOW + tonumber(ARGV[7]), ARGV[6])
if known and tonumber(known) >= NOW then return 1 end
if known then return 2 end
return 0

--@ reclaim
-- ARGV[6] owner to reclaim now ('' = every owner whose lease ran out) -> sessions ended
local owners
if ARGV[6] ~= '' then owners = {ARGV[6]} else
  owners = redis.call('ZRANGEBYSCORE', P .. 'owners', '-inf', NOW - 1, 'LIMIT', 0, 16)
end
local ended = 0
for _, owner in ipairs(owners) do
  for _, sid in ipairs(redis.call('SMEMBERS', P .. 'os:' .. owner)) do
    if end_session(sid) then ended = ended + 1 end
  end
  redis.call('DEL', P .. 'os:' .. owner)
  redis.call('ZREM', P .. 'owners', owner)
  redis.call('SADD', P .. 'dead', owner)
end
return ended

--@ new_owner
-- -> a number for a new gateway process: its chunk ids are <number> * 2^32 + a local counter
return redis.call('HINCRBY', P .. 'ctr', 'owner', 1)

--@ dead_owners
-- -> gateways whose leftover chunks still have to be looked for
return redis.call('SMEMBERS', P .. 'dead')

--@ orphans
-- ARGV[6] dead owner, ARGV[7] '1' when its scan is complete, ARGV[8..] chunk ids found under it
-- Chunks no version references are queued for deletion at once.
for i = 8, #ARGV do
  if redis.call('HEXISTS', P .. 'cr', ARGV[i]) == 0 then redis.call('ZADD', P .. 'gc', NOW, ARGV[i]) end
end
if ARGV[7] == '1' then redis.call('SREM', P .. 'dead', ARGV[6]) end
return 1

--@ lease
-- ARGV[6] name, ARGV[7] holder, ARGV[8] ttl ms (0 = give it up) -> 1 if the holder has it now
local key = P .. 'lease:' .. ARGV[6]
local current = redis.call('GET', key)
if ARGV[8] == '0' then
  if current == ARGV[7] then redis.call('DEL', key) end
  return 0
end
if current and current ~= ARGV[7] then return 0 end
redis.call('SET', key, ARGV[7], 'PX', ARGV[8])
return 1

--@ cursor
-- ARGV[6] consumer name, ARGV[7] seq delivered up to, or '' to read (a new consumer starts at the
-- newest event), ARGV[8] history max (events), ARGV[9] history age (ms) -> the consumer's seq
local last = tonumber(redis.call('HGET', P .. 'ctr', 'seq') or '0')
local current = redis.call('HGET', P .. 'cur', ARGV[6])
if ARGV[7] == '' then
  if current then return tonumber(current) end
  redis.call('HSET', P .. 'cur', ARGV[6], num(last))
  return last
end
local seq = tonumber(ARGV[7])
if seq > last then fail('invalid_argument', 'cannot move cursor ' .. ARGV[6] .. ' to event ' .. num(seq) .. ': the newest is ' .. num(last)) end
redis.call('HSET', P .. 'cur', ARGV[6], num(seq))
trim_history(tonumber(ARGV[8]), NOW - tonumber(ARGV[9]))
return seq

--@ retain_cursors
-- ARGV[6] history max (events), ARGV[7] history age (ms), ARGV[8..] consumers to keep -> cursors dropped
local keep = {}
for i = 8, #ARGV do keep[ARGV[i]] = true end
local dropped = 0
for _, name in ipairs(redis.call('HKEYS', P .. 'cur')) do
  if not keep[name] then redis.call('HDEL', P .. 'cur', name) dropped = dropped + 1 end
end
if dropped > 0 then trim_history(tonumber(ARGV[6]), NOW - tonumber(ARGV[7])) end
return dropped

--@ gc_due
-- ARGV[6] limit -> chunk ids whose deletion is due (the caller deletes them, then runs gc_forget)
return redis.call('ZRANGEBYSCORE', P .. 'gc', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[6]))

--@ gc_forget
-- ARGV[6..] chunk ids that were deleted
for i = 6, #ARGV do redis.call('ZREM', P .. 'gc', ARGV[i]) end
return #ARGV - 5

--@ usage
-- -> {referenced chunks, garbage chunks, versions (approx.), open sessions, inodes}
local ctr = redis.call('HMGET', P .. 'ctr', 'ino', 'vid', 'sid')
local sessions = 0
for _, owner in ipairs(redis.call('ZRANGE', P .. 'owners', 0, -1)) do
  sessions = sessions + redis.call('SCARD', P .. 'os:' .. owner)
end
return {redis.call('HLEN', P .. 'cr'), redis.call('ZCARD', P .. 'gc'), sessions}

--@ referenced
-- -> every chunk id a committed version or an open session refers to (for the integrity check)
local out = {}
for _, id in ipairs(redis.call('HKEYS', P .. 'cr')) do out[#out + 1] = id end
return out
