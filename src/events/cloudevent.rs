//! How a store event appears on MQTT: its topic, and a CloudEvents 1.0 JSON document (structured
//! mode) — after the `[events]` rules decide what subscribers should see.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use storage_backend::{Event, EventKind};

use super::names::TempNames;

/// What is announced for one store event, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// `io.filegate.file.created`, …
    pub kind: &'static str,
    pub path: String,
    pub old_path: Option<String>,
}

/// Applies the `[events]` rules: temporary names are not announced; renaming a temporary file to a
/// final name announces the final file as if it had been uploaded under that name; attribute-only
/// changes (mtime) are not announced.
pub fn announce(event: &Event, temp: &TempNames) -> Option<Announcement> {
    let file = |kind| Announcement {
        kind,
        path: event.path.clone(),
        old_path: event.old_path.clone(),
    };
    let complete = event.complete != Some(false);
    match event.kind {
        EventKind::FileCreated
        | EventKind::FileModified
        | EventKind::FileIncomplete
        | EventKind::FileDeleted
            if temp.matches(&event.path) =>
        {
            None
        }
        EventKind::FileCreated => Some(file("io.filegate.file.created")),
        EventKind::FileModified => Some(file("io.filegate.file.modified")),
        EventKind::FileIncomplete => Some(file("io.filegate.file.incomplete")),
        EventKind::FileDeleted => Some(file("io.filegate.file.deleted")),
        EventKind::FileRenamed => {
            let from_temp = event.old_path.as_deref().is_some_and(|p| temp.matches(p));
            match (from_temp, temp.matches(&event.path)) {
                (true, true) => None,
                // The upload under a temporary name is done: the file appears under its real name.
                (true, false) if !complete => Some(file("io.filegate.file.incomplete")),
                (true, false) if event.replaced => Some(file("io.filegate.file.modified")),
                (true, false) => Some(file("io.filegate.file.created")),
                // A final file moved to a temporary name has gone, for subscribers.
                (false, true) => Some(Announcement {
                    kind: "io.filegate.file.deleted",
                    path: event.old_path.clone().unwrap_or_default(),
                    old_path: None,
                }),
                (false, false) => Some(file("io.filegate.file.renamed")),
            }
        }
        EventKind::FileAttributes => None,
        // The staging directory of resumable uploads is the gateway's own, not a user's.
        EventKind::DirCreated | EventKind::DirDeleted | EventKind::DirRenamed
            if crate::access::is_staging(&event.path) =>
        {
            None
        }
        EventKind::DirCreated => Some(file("io.filegate.dir.created")),
        EventKind::DirDeleted => Some(file("io.filegate.dir.deleted")),
        EventKind::DirRenamed => Some(file("io.filegate.dir.renamed")),
    }
}

/// `{prefix}/events/{path}`: one topic level per path segment, with `+`, `#` and `%` (which MQTT
/// forbids in a published topic, or which would be ambiguous) percent-encoded.
pub fn topic(prefix: &str, path: &str) -> String {
    let mut t = format!("{prefix}/events");
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        t.push('/');
        for c in seg.chars() {
            match c {
                '%' => t.push_str("%25"),
                '+' => t.push_str("%2B"),
                '#' => t.push_str("%23"),
                c => t.push(c),
            }
        }
    }
    t
}

/// The CloudEvents 1.0 document for an announcement of `event`.
pub fn payload(event: &Event, a: &Announcement, source: &str) -> Vec<u8> {
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(event.time_ms))
        .to_string();
    let is_file = a.kind.starts_with("io.filegate.file.");
    let data = json!({
        "path": a.path,
        "old_path": a.old_path,
        "size": if is_file { event.size.map(Value::from) } else { None },
        "sha256": if is_file { event.sha256.clone() } else { None },
        "complete": if is_file { event.complete.map(Value::from) } else { None },
        "version": if is_file { event.version.map(Value::from) } else { None },
        "seq": event.seq,
        "user": event.user,
        "protocol": event.protocol,
        "peer": event.peer,
    });
    let doc = json!({
        "specversion": "1.0",
        "id": event.id,
        "source": source,
        "type": a.kind,
        "time": time,
        "subject": a.path,
        "datacontenttype": "application/json",
        "data": data,
    });
    serde_json::to_vec(&doc).expect("json values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, path: &str, old: Option<&str>) -> Event {
        Event {
            seq: 7,
            id: "0b1c".into(),
            kind,
            time_ms: 1_700_000_000_123,
            path: path.into(),
            old_path: old.map(str::to_string),
            size: Some(5),
            sha256: Some("ab".into()),
            complete: Some(true),
            version: Some(3),
            replaced: false,
            user: "alice".into(),
            protocol: "ftp".into(),
            peer: "10.0.0.1:5000".into(),
        }
    }

    #[test]
    fn topics_encode_what_mqtt_forbids() {
        assert_eq!(
            topic("filegate", "/a/b c/d.txt"),
            "filegate/events/a/b c/d.txt"
        );
        assert_eq!(topic("fg", "/x+y/#1/50%"), "fg/events/x%2By/%231/50%25");
    }

    #[test]
    fn temporary_names_are_announced_by_their_final_name() {
        let temp = TempNames::new(&["*.filepart".into(), "*.tmp".into()]);
        assert_eq!(
            announce(
                &event(EventKind::FileCreated, "/r.csv.filepart", None),
                &temp
            ),
            None
        );
        let a = announce(
            &event(EventKind::FileRenamed, "/r.csv", Some("/r.csv.filepart")),
            &temp,
        )
        .unwrap();
        assert_eq!(
            (a.kind, a.path.as_str(), a.old_path.as_deref()),
            (
                "io.filegate.file.created",
                "/r.csv",
                Some("/r.csv.filepart")
            )
        );
        let mut over = event(EventKind::FileRenamed, "/r.csv", Some("/r.tmp"));
        over.replaced = true;
        assert_eq!(
            announce(&over, &temp).unwrap().kind,
            "io.filegate.file.modified"
        );
        let mut cut = event(EventKind::FileRenamed, "/r.csv", Some("/r.tmp"));
        cut.complete = Some(false);
        assert_eq!(
            announce(&cut, &temp).unwrap().kind,
            "io.filegate.file.incomplete"
        );
        assert_eq!(
            announce(
                &event(EventKind::FileRenamed, "/b.tmp", Some("/a.tmp")),
                &temp
            ),
            None
        );
        let gone = announce(
            &event(EventKind::FileRenamed, "/r.tmp", Some("/r.csv")),
            &temp,
        )
        .unwrap();
        assert_eq!(
            (gone.kind, gone.path.as_str()),
            ("io.filegate.file.deleted", "/r.csv")
        );
        assert_eq!(
            announce(&event(EventKind::FileAttributes, "/r.csv", None), &temp),
            None
        );
        assert_eq!(
            announce(&event(EventKind::FileDeleted, "/x.tmp", None), &temp),
            None
        );
    }

    #[test]
    fn payloads_are_cloudevents() {
        let e = event(EventKind::FileCreated, "/d/f.txt", None);
        let a = announce(&e, &TempNames::default()).unwrap();
        let doc: Value = serde_json::from_slice(&payload(&e, &a, "filegate://gw-1")).unwrap();
        assert_eq!(doc["specversion"], "1.0");
        assert_eq!(doc["type"], "io.filegate.file.created");
        assert_eq!(doc["source"], "filegate://gw-1");
        assert_eq!(doc["subject"], "/d/f.txt");
        assert_eq!(doc["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(doc["data"]["sha256"], "ab");
        assert_eq!(doc["data"]["seq"], 7);
        assert_eq!(doc["data"]["complete"], true);
        assert_eq!(doc["data"]["protocol"], "ftp");
        let d = event(EventKind::DirCreated, "/d", None);
        let doc: Value = serde_json::from_slice(&payload(
            &d,
            &announce(&d, &TempNames::default()).unwrap(),
            "s",
        ))
        .unwrap();
        assert_eq!(doc["data"]["size"], Value::Null);
    }
}
