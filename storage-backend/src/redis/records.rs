//! Records (see `crate::records`) in Redis: `{N}:r:<table>:<key>` holds the value and expires by
//! itself (PXAT); `{N}:ri:<table>` indexes a table's keys, scored by expiry (+inf for never), so a
//! table can be listed and the index swept; `{N}:rt` names the tables. All keys share the
//! namespace's hash tag, so each script is one atomic step even on a cluster.

use std::sync::LazyLock;

use redis::Script;

use super::RedisBackend;
use crate::error::Result;
use crate::types::now_ms;

const SWEEP_BATCH: usize = 1000;

/// ARGV: prefix, table, key, value, expiry ms (0 = never), mode (`put`, `absent`, `equal`), expected
/// -> 1 written, 0 refused
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local P, tbl, key, value, exp, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local k = P .. 'r:' .. tbl .. ':' .. key
if mode ~= 'put' then
  local cur = redis.call('GET', k)
  if mode == 'absent' and cur then return 0 end
  if mode == 'equal' and cur ~= ARGV[7] then return 0 end
end
if exp > 0 then
  redis.call('SET', k, value, 'PXAT', exp)
  redis.call('ZADD', P .. 'ri:' .. tbl, exp, key)
else
  redis.call('SET', k, value)
  redis.call('ZADD', P .. 'ri:' .. tbl, '+inf', key)
end
redis.call('SADD', P .. 'rt', tbl)
return 1
"#,
    )
});

/// ARGV: prefix, table, key -> 1 if it existed
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local P, tbl, key = ARGV[1], ARGV[2], ARGV[3]
redis.call('ZREM', P .. 'ri:' .. tbl, key)
return redis.call('DEL', P .. 'r:' .. tbl .. ':' .. key)
"#,
    )
});

/// ARGV: prefix, table, after, limit, now -> {key, value, key, value, ...} in key order
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local P, tbl, after, limit, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local keys = redis.call('ZRANGEBYSCORE', P .. 'ri:' .. tbl, '(' .. now, '+inf')
local sorted = {}
for _, k in ipairs(keys) do if k > after then sorted[#sorted + 1] = k end end
table.sort(sorted)
local out = {}
for _, k in ipairs(sorted) do
  local v = redis.call('GET', P .. 'r:' .. tbl .. ':' .. k)
  if v then
    out[#out + 1] = k
    out[#out + 1] = v
    if #out >= 2 * limit then break end
  end
end
return out
"#,
    )
});

/// ARGV: prefix, now, batch -> index entries removed
static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local P, now, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local removed = 0
for _, t in ipairs(redis.call('SMEMBERS', P .. 'rt')) do
  local idx = P .. 'ri:' .. t
  local due = redis.call('ZRANGEBYSCORE', idx, '-inf', now, 'LIMIT', 0, batch)
  for _, k in ipairs(due) do
    redis.call('ZREM', idx, k)
    redis.call('DEL', P .. 'r:' .. t .. ':' .. k)
    removed = removed + 1
  end
  if redis.call('ZCARD', idx) == 0 then redis.call('SREM', P .. 'rt', t) end
end
return removed
"#,
    )
});

impl RedisBackend {
    fn record_key(&self, table: &str, key: &str) -> String {
        format!("{}r:{table}:{key}", self.prefix)
    }

    pub(crate) async fn record_write(
        &self,
        table: &str,
        key: &str,
        expected: Option<Option<&[u8]>>,
        value: &[u8],
        expires: u64,
    ) -> Result<bool> {
        let mut inv = WRITE.key(&self.ctr_key);
        inv.arg(&self.prefix)
            .arg(table)
            .arg(key)
            .arg(value)
            .arg(expires);
        match expected {
            None => inv.arg("put"),
            Some(None) => inv.arg("absent"),
            Some(Some(v)) => inv.arg("equal").arg(v),
        };
        let written: u8 = self.run(&mut inv).await?;
        Ok(written == 1)
    }

    pub(crate) async fn record_get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.meta.clone();
        redis::cmd("GET")
            .arg(self.record_key(table, key))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }

    pub(crate) async fn record_delete(&self, table: &str, key: &str) -> Result<bool> {
        let mut inv = DELETE.key(&self.ctr_key);
        inv.arg(&self.prefix).arg(table).arg(key);
        let n: u64 = self.run(&mut inv).await?;
        Ok(n > 0)
    }

    pub(crate) async fn record_list(
        &self,
        table: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let mut inv = LIST.key(&self.ctr_key);
        inv.arg(&self.prefix)
            .arg(table)
            .arg(after)
            .arg(limit.max(1))
            .arg(now_ms());
        let flat: Vec<Vec<u8>> = self.run(&mut inv).await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        Ok(out)
    }

    pub(crate) async fn sweep_records(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let mut inv = SWEEP.key(&self.ctr_key);
            inv.arg(&self.prefix).arg(now_ms()).arg(SWEEP_BATCH);
            let n: u64 = self.run(&mut inv).await?;
            total += n;
            if n < SWEEP_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}
