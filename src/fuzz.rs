//! Entry points for the hostile-input tests and the cargo-fuzz targets (`fuzz/`): each takes raw
//! bytes as a client would send them and checks the invariants that must hold for any input.
//! Not part of the API.

use crate::access::{jail, UserFs, UserPath};
use crate::config::Config;

/// A client path, against a few working directories: resolving never panics, and whatever it
/// resolves to stays inside the home, in canonical form.
pub fn path(input: &[u8]) {
    let home = storage_backend::StorePath::parse("/home/u").expect("valid home");
    for cwd in ["/", "/a", "/a/b c"] {
        let cwd = jail::resolve_str(&UserPath::root(), cwd).expect("valid cwd");
        if let Ok(p) = jail::resolve(&cwd, input) {
            let text = p.as_str();
            assert!(text.starts_with('/'), "{text:?} is not absolute");
            assert!(
                !text.split('/').any(|s| s == "." || s == ".."),
                "{text:?} is not canonical"
            );
            assert!(!text.contains("//") && !text.contains('\\') && !text.contains('\0'));
            if let Ok(sp) = jail::to_store(&home, &p) {
                let s = sp.as_str();
                assert!(
                    s == "/home/u" || s.starts_with("/home/u/"),
                    "{input:?} from {cwd} escaped the home: {s}"
                );
            }
        }
    }
}

/// A configuration file: loading never panics, and a refusal always says something.
pub fn config(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    if let Err(e) = Config::load_str(&text, "fuzz.toml", Vec::<(String, String)>::new()) {
        assert!(!e.to_string().is_empty());
    }
}

/// A file path becomes an event topic without MQTT wildcards or empty levels, and a command
/// topic built from it gives the same path back.
pub fn topic(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let segments: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
    let path = format!("/{}", segments.join("/"));
    let t = crate::events::topic("filegate", &path);
    assert!(!t.contains('+') && !t.contains('#'), "{t:?} has a wildcard");
    assert!(
        !t.contains("//") && !t.ends_with('/'),
        "{t:?} has an empty level"
    );
    let request = format!(
        "filegate/commands/get{}",
        t.strip_prefix("filegate/events").expect("prefix")
    );
    let (op, back) = crate::events::parse_request("filegate", &request);
    assert_eq!(op, "get");
    if segments.is_empty() {
        assert_eq!(back, "/");
    } else {
        assert_eq!(back, path, "the topic {t:?} does not give its path back");
    }
}

/// Any topic a client publishes under the command prefix: parsing never panics and the path it
/// names resolves inside the home or is refused.
pub fn command_topic(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let topic = format!("filegate/commands/{text}");
    let (_op, path) = crate::events::parse_request("filegate", &topic);
    path_from_str(&path);
}

fn path_from_str(text: &str) {
    path(text.as_bytes());
}

/// The command line of an SSH `exec` request: only scp is accepted, and parsing never panics.
pub fn exec_command(input: &[u8]) {
    let line = String::from_utf8_lossy(input);
    if let Ok(cmd) = crate::sftp::scp::Command::parse(&line) {
        assert!(!cmd.paths.is_empty());
    }
}

/// The client's side of an `scp -t` upload, as raw bytes: the sink never panics and ends when
/// the input does.
pub async fn scp_upload(fs: &UserFs, recursive: bool, input: &[u8]) -> u32 {
    let cmd = crate::sftp::scp::Command {
        sink: true,
        recursive,
        preserve: true,
        target_dir: false,
        paths: vec!["/".into()],
    };
    let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
    let input = input.to_vec();
    let client = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = theirs.write_all(&input).await;
        let _ = theirs.shutdown().await;
        let mut sink = Vec::new();
        let _ = theirs.read_to_end(&mut sink).await;
    });
    let status = crate::sftp::scp::run(&mut ours, &cmd, fs).await;
    drop(ours);
    let _ = client.await;
    status
}

/// Raw bytes on an SFTP channel, as a client would send them: our request handling (over
/// russh-sftp's packet parser) never panics, answers or ends, and stays in the home.
pub async fn sftp_packets(fs: &UserFs, input: &[u8]) {
    use crate::sftp::subsystem::{SftpHandler, MAX_PACKET};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let tasks = tokio_util::task::TaskTracker::new();
    let handler = SftpHandler::new(fs.clone(), tasks.clone());
    let config = russh_sftp::server::Config {
        max_client_packet_len: MAX_PACKET,
    };
    russh_sftp::server::run_with_config(ours, handler, config).await;
    let (mut r, mut w) = tokio::io::split(&mut theirs);
    let input = input.to_vec();
    let writer = async move {
        let _ = w.write_all(&input).await;
        let _ = w.shutdown().await;
    };
    let reader = async move {
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink).await;
    };
    tokio::join!(writer, reader);
    tasks.close();
    tasks.wait().await;
}

/// Raw bytes on an MQTT connection (both versions: a CONNECT picks one, else the first byte's low
/// bit): the broker's decoder, ACL and answers never panic, whatever arrives.
pub fn mqtt_packets(input: &[u8]) {
    crate::mqtt::fuzz_packets(input);
}
