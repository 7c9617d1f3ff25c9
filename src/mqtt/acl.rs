//! Who may do what on the embedded broker: the one owner of its topic rules.
//!
//! - `{prefix}/events/{path}` — only the gateway publishes here. A user receives an event only
//!   when its path is in the user's home and the user may `list`; anonymous clients only when
//!   `mqtt.anonymous_home` names a home (and then only under it).
//! - `{prefix}/commands/{op}/{path}` — logged-in users publish commands (with `mqtt.commands`);
//!   they run as that user. Nobody receives them.
//! - `{prefix}/replies/{user}/…` — replies to `user`'s commands; only `user` receives them, and a
//!   filter naming another user is refused outright.
//! - Nothing else: clients may publish nowhere else, and nothing else is ever delivered.
//!
//! Wildcard filters (`#`, `{prefix}/+/…`) are accepted and filtered per message, so a client that
//! subscribes to `#` sees exactly what it may see.

use rumqttc::mqttbytes::{valid_filter, valid_topic};

use super::codec::Refused;

/// Who is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The gateway's own event publisher (credentials made up at start).
    Gateway,
    /// A `[[users]]` entry.
    User {
        name: String,
        /// The store path of the user's home (`/` or `/home/alice`, no trailing slash but for `/`).
        home: String,
        /// The user's `list` permission: without it, no events.
        can_list: bool,
    },
    /// `mqtt.allow_anonymous`: sees events under `home` only, if one is configured.
    Anonymous { home: Option<String> },
}

impl Principal {
    /// A logged-in user as the event rules see them: their home and `list` permission.
    pub fn user(fs: &crate::access::UserFs) -> Principal {
        Principal::User {
            name: fs.user().to_string(),
            home: fs.home().to_string(),
            can_list: fs.can(crate::config::Permission::List),
        }
    }

    /// Whether an event about store path `path` may reach this principal — the one rule for
    /// every way events leave the gateway (MQTT topics here, SSE/WebSocket and replay over HTTP).
    pub fn sees_event(&self, path: &str) -> bool {
        match self {
            Principal::User { home, can_list, .. } => *can_list && within(path, home),
            Principal::Anonymous { home: Some(home) } => within(path, home),
            _ => false,
        }
    }

    /// The name used in logs and in session keys.
    pub fn name(&self) -> &str {
        match self {
            Principal::Gateway => "filegate",
            Principal::User { name, .. } => name,
            Principal::Anonymous { .. } => "",
        }
    }
}

/// The topic rules of one broker.
#[derive(Debug, Clone)]
pub struct Rules {
    prefix: String,
    commands: bool,
}

impl Rules {
    pub fn new(prefix: &str, commands: bool) -> Rules {
        Rules {
            prefix: prefix.trim_end_matches('/').to_string(),
            commands,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}/replies/{user}/`: the only place a user's replies go, and the prefix an MQTT 5
    /// response topic must start with.
    pub fn reply_prefix(&self, user: &str) -> String {
        format!("{}/replies/{}/", self.prefix, encode_level(user))
    }

    /// Whether `p` may publish on `topic`.
    pub fn may_publish(&self, p: &Principal, topic: &str) -> Result<(), (Refused, String)> {
        if !valid_topic(topic) || topic.is_empty() {
            return Err((
                Refused::Invalid,
                format!("{topic:?} is not a valid topic name"),
            ));
        }
        match p {
            Principal::Gateway if self.rest(topic, "events").is_some() => Ok(()),
            Principal::User { .. } if self.rest(topic, "commands").is_some() => {
                if self.commands {
                    Ok(())
                } else {
                    Err((
                        Refused::NotAuthorized,
                        "file commands are off on this gateway (mqtt.commands = false)".into(),
                    ))
                }
            }
            Principal::Anonymous { .. } => Err((
                Refused::NotAuthorized,
                "anonymous clients may only subscribe to events".into(),
            )),
            _ => Err((
                Refused::NotAuthorized,
                format!(
                    "clients may publish only file commands, on {}/commands/{{op}}/{{path}}",
                    self.prefix
                ),
            )),
        }
    }

    /// Whether `p` may subscribe to `filter`. Wildcards are allowed (delivery filters each
    /// message); a filter that can only match what `p` may never receive is refused.
    pub fn may_subscribe(&self, p: &Principal, filter: &str) -> Result<(), Refused> {
        if filter.starts_with("$share/") {
            return Err(Refused::SharedNotSupported);
        }
        if !valid_filter(filter) {
            return Err(Refused::Invalid);
        }
        match p {
            Principal::Gateway => Err(Refused::NotAuthorized),
            Principal::Anonymous { home: None } => Err(Refused::NotAuthorized),
            Principal::Anonymous { .. } => Ok(()),
            Principal::User { name, .. } => {
                // `{prefix}/replies/{other}/…` with the user level spelled out: refused.
                if let Some(rest) = self.rest(filter, "replies") {
                    let level = rest.split('/').next().unwrap_or("");
                    if level != "+" && level != "#" && level != encode_level(name) {
                        return Err(Refused::NotAuthorized);
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether a message on `topic` may reach `p` (checked for every message and subscriber).
    pub fn may_receive(&self, p: &Principal, topic: &str) -> bool {
        if let Some(rest) = self.rest(topic, "events") {
            return p.sees_event(&event_path(rest));
        }
        if let Some(rest) = self.rest(topic, "replies") {
            let level = rest.split('/').next().unwrap_or("");
            return matches!(p, Principal::User { name, .. } if level == encode_level(name));
        }
        false
    }

    /// `topic` below `{prefix}/{kind}/`, if it is there.
    fn rest<'t>(&self, topic: &'t str, kind: &str) -> Option<&'t str> {
        topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?
            .strip_prefix(kind)?
            .strip_prefix('/')
    }
}

/// Whether the subscription `filter` matches `topic` (MQTT's wildcard rules; `$` topics are not
/// matched by leading wildcards). Our own: rumqttc's `matches` slices `topic[..1]`, which panics
/// on a topic that starts with a multi-byte character.
pub fn filter_matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(_) if f == "+" => {}
            Some(t) if t == f => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// A user name as one topic level: the characters MQTT gives meaning to are percent-encoded, as
/// event topics encode path segments.
pub fn encode_level(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => s.push_str("%25"),
            '+' => s.push_str("%2B"),
            '#' => s.push_str("%23"),
            '/' => s.push_str("%2F"),
            c => s.push(c),
        }
    }
    s
}

/// The store path an event topic names (the levels after `{prefix}/events/`, decoded).
fn event_path(rest: &str) -> String {
    let mut path = String::new();
    for seg in rest.split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        path.push_str(
            &seg.replace("%2B", "+")
                .replace("%23", "#")
                .replace("%25", "%"),
        );
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// Whether store path `path` is `home` or below it.
fn within(path: &str, home: &str) -> bool {
    if home == "/" {
        return true;
    }
    path == home
        || path
            .strip_prefix(home)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A Mosquitto `acl_file` with the same rules, for an external broker (`filegate mqtt-acl`):
/// each user reads the events of their home; the gateway's login (`mqtt.username`) publishes
/// events and, with commands on, reads commands and publishes replies; only
/// `mqtt.commands_user`'s own broker login may publish commands, since they run as that user.
pub fn mosquitto_acl(config: &crate::config::Config) -> String {
    use crate::config::Permission;
    let m = &config.mqtt;
    let prefix = m.topic_prefix.trim_end_matches('/');
    let mut out = String::new();
    out.push_str(&format!(
        "# Mosquitto acl_file for filegate (topic prefix {prefix:?}), made by `filegate mqtt-acl`.\n\
         # Use it with `allow_anonymous false`, a password_file holding the same users, and\n\
         # `acl_file <this file>`. Anything not granted here is refused by Mosquitto.\n\n"
    ));
    let gateway = if m.username.is_empty() {
        "filegate"
    } else {
        m.username.as_str()
    };
    out.push_str(&format!(
        "# the gateway's publisher{}\nuser {gateway}\ntopic write {prefix}/events/#\n",
        if m.username.is_empty() {
            " (set mqtt.username; \"filegate\" is assumed here)"
        } else {
            ""
        }
    ));
    if m.commands {
        out.push_str(&format!(
            "topic read {prefix}/commands/#\ntopic write {prefix}/replies/#\n"
        ));
    }
    out.push('\n');
    for u in &config.users {
        if u.name == gateway {
            continue;
        }
        out.push_str(&format!("user {}\n", u.name));
        if u.permissions.contains(&Permission::List) {
            // The home parsed when the configuration was read; one that is none grants nothing.
            match u.home.path() {
                Ok(home) if home.is_root() => {
                    out.push_str(&format!("topic read {prefix}/events/#\n"));
                }
                Ok(home) => {
                    let t = crate::events::topic(prefix, home.as_str());
                    out.push_str(&format!("topic read {t}\ntopic read {t}/#\n"));
                }
                Err(_) => {}
            }
        }
        if m.commands && u.name == m.commands_user {
            out.push_str(&format!(
                "# commands run as {} whoever sends them: only this login may send them\n\
                 topic write {prefix}/commands/#\ntopic read {prefix}/replies/#\n",
                u.name
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal::User {
            name: "alice".into(),
            home: "/home/alice".into(),
            can_list: true,
        }
    }

    #[test]
    fn events_reach_only_their_home() {
        let r = Rules::new("filegate", true);
        let a = alice();
        assert!(r.may_receive(&a, "filegate/events/home/alice/x.txt"));
        assert!(r.may_receive(&a, "filegate/events/home/alice"));
        assert!(!r.may_receive(&a, "filegate/events/home/alicex/x.txt"));
        assert!(!r.may_receive(&a, "filegate/events/home/bob/x.txt"));
        assert!(!r.may_receive(&a, "filegate/events"));
        let blind = Principal::User {
            name: "w".into(),
            home: "/home/alice".into(),
            can_list: false,
        };
        assert!(!r.may_receive(&blind, "filegate/events/home/alice/x.txt"));
        let root = Principal::User {
            name: "admin".into(),
            home: "/".into(),
            can_list: true,
        };
        assert!(r.may_receive(&root, "filegate/events/home/bob/x.txt"));
        assert!(!r.may_receive(
            &Principal::Anonymous { home: None },
            "filegate/events/home/alice/x"
        ));
        let anon = Principal::Anonymous {
            home: Some("/pub".into()),
        };
        assert!(r.may_receive(&anon, "filegate/events/pub/x"));
        assert!(!r.may_receive(&anon, "filegate/events/home/alice/x"));
        assert!(!r.may_receive(&Principal::Gateway, "filegate/events/pub/x"));
    }

    #[test]
    fn replies_reach_only_their_user() {
        let r = Rules::new("filegate", true);
        assert!(r.may_receive(&alice(), "filegate/replies/alice/put/x"));
        assert!(!r.may_receive(&alice(), "filegate/replies/bob/put/x"));
        assert!(!r.may_receive(&alice(), "filegate/commands/put/x"));
        assert!(!r.may_receive(&alice(), "other/topic"));
        assert_eq!(
            r.may_subscribe(&alice(), "filegate/replies/bob/#"),
            Err(Refused::NotAuthorized)
        );
        assert!(r
            .may_subscribe(&alice(), "filegate/replies/alice/#")
            .is_ok());
        assert!(r.may_subscribe(&alice(), "filegate/replies/+/#").is_ok());
        assert!(r.may_subscribe(&alice(), "#").is_ok());
        assert_eq!(
            r.may_subscribe(&alice(), "$share/g/filegate/events/#"),
            Err(Refused::SharedNotSupported)
        );
        assert_eq!(r.may_subscribe(&alice(), "a/#/b"), Err(Refused::Invalid));
    }

    #[test]
    fn wildcards() {
        assert!(filter_matches("a/b/c", "a/#"));
        assert!(filter_matches("a", "a/#"));
        assert!(filter_matches("a/b/c", "a/+/c"));
        assert!(!filter_matches("a/b/c", "a/+"));
        assert!(filter_matches("ä/b", "+/b"));
        assert!(!filter_matches("$SYS/x", "#"));
        assert!(filter_matches("$SYS/x", "$SYS/#"));
        assert!(!filter_matches("a/b", "a/b/c"));
    }

    #[test]
    fn only_the_gateway_publishes_events_and_only_users_command() {
        let r = Rules::new("filegate", true);
        assert!(r
            .may_publish(&Principal::Gateway, "filegate/events/x")
            .is_ok());
        assert!(r
            .may_publish(&alice(), "filegate/events/home/alice/x")
            .is_err());
        assert!(r.may_publish(&alice(), "filegate/replies/alice/x").is_err());
        assert!(r.may_publish(&alice(), "filegate/commands/put/x").is_ok());
        assert!(r.may_publish(&alice(), "anything/else").is_err());
        assert!(r.may_publish(&alice(), "filegate/commands/#").is_err());
        let anon = Principal::Anonymous { home: None };
        assert!(r.may_publish(&anon, "filegate/commands/put/x").is_err());
        let off = Rules::new("filegate", false);
        assert!(off
            .may_publish(&alice(), "filegate/commands/put/x")
            .is_err());
    }
}
