//! The Lua scripts every metadata change runs as (`prelude.lua` + `scripts.lua`), loaded by name,
//! and the one way to call them: the common leading arguments, and a resend when the connection
//! had died before the script could run.

use std::collections::HashMap;

use redis::{FromRedisValue, Script, ScriptInvocation};

use super::errors::{unsent, RESENDS, RESEND_PAUSE};
use super::link::read_only;
use super::RedisBackend;
use crate::error::Result;
use crate::outbox::EventOrigin;
use crate::types::now_ms;

const PRELUDE: &str = include_str!("prelude.lua");
const SCRIPTS: &str = include_str!("scripts.lua");

pub(super) struct Scripts(HashMap<&'static str, Script>);

impl Scripts {
    pub(super) fn load() -> Scripts {
        let mut map = HashMap::new();
        for part in SCRIPTS.split("--@ ").skip(1) {
            let (name, body) = part.split_once('\n').expect("script header line");
            map.insert(name.trim(), Script::new(&format!("{PRELUDE}\n{body}")));
        }
        Scripts(map)
    }

    pub(super) fn get(&self, name: &str) -> &Script {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("no Lua script named {name}"))
    }
}

impl RedisBackend {
    /// An invocation of a named script with the common leading arguments filled in.
    pub(super) fn script(&self, name: &str, origin: Option<&EventOrigin>) -> ScriptInvocation<'_> {
        let mut inv = self.scripts.get(name).key(&self.ctr_key);
        inv.arg(&self.prefix)
            .arg(now_ms())
            .arg(self.settings.gc_grace.as_millis() as u64)
            .arg(self.settings.outbox_limit)
            .arg(origin.map(EventOrigin::to_json).unwrap_or_default());
        inv
    }

    pub(super) async fn run<T: FromRedisValue>(&self, inv: &mut ScriptInvocation<'_>) -> Result<T> {
        let mut attempt = 0;
        loop {
            let mut conn = self.meta.clone();
            match inv.invoke_async(&mut conn).await {
                // The connection had died (Redis restarted): the script never ran, so it may run
                // on the connection the manager makes next, instead of failing the operation.
                Err(e) if (unsent(&e) || read_only(&e)) && attempt < RESENDS => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "redis: connection lost; sending again");
                    tokio::time::sleep(RESEND_PAUSE * attempt).await;
                }
                r => return r.map_err(|e| self.error(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_parses_into_a_name() {
        let s = Scripts::load();
        for name in [
            "init",
            "stat",
            "list",
            "mkdir",
            "rmdir",
            "delete",
            "rename",
            "set_mtime",
            "open_session",
            "new_owner",
            "dead_owners",
            "orphans",
            "commit",
            "end_session",
            "open_read",
            "ack",
            "trim_history",
            "outbox_status",
            "heartbeat",
            "reclaim",
            "gc_due",
            "gc_forget",
            "lease",
            "cursor",
            "retain_cursors",
            "usage",
            "referenced",
        ] {
            s.get(name);
        }
    }
}
