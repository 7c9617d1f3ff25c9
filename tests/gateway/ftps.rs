//! Explicit FTPS (RFC 4217: AUTH TLS, PBSZ, PROT P) and implicit FTPS (TLS from the first byte)
//! with a self-signed certificate made for the test.

use std::sync::Arc;

use crate::common::{client, content, program, start, Kind, PASSWORD};
use suppaftp::tokio::{AsyncFtpStream, AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::tokio_rustls::rustls;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode};
use tokio::io::AsyncReadExt;

struct Cert {
    cert_pem: std::path::PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn make_cert(dir: &std::path::Path) -> Cert {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = dir.join("ftp.crt");
    std::fs::write(&cert_pem, made.cert.pem()).unwrap();
    std::fs::write(dir.join("ftp.key"), made.signing_key.serialize_pem()).unwrap();
    Cert {
        cert_pem,
        der: made.cert.der().clone(),
    }
}

/// A TLS client configuration that trusts only the test certificate.
fn client_config(cert: &Cert) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn connector(cert: &Cert) -> AsyncRustlsConnector {
    AsyncRustlsConnector::from(suppaftp::tokio_rustls::TlsConnector::from(client_config(
        cert,
    )))
}

/// The reply line of a refused command.
fn reply<T: std::fmt::Debug>(r: Result<T, FtpError>) -> String {
    match r {
        Err(FtpError::UnexpectedResponse(resp)) => resp.as_string().unwrap(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ftps_is_required_and_works() {
    let certs = tempfile::tempdir().unwrap();
    let cert = make_cert(certs.path());
    let t = start(Kind::Embedded, |c| {
        c.ftp.tls.enabled = true;
        c.ftp.tls.required = true;
        c.ftp.tls.cert = certs.path().join("ftp.crt");
        c.ftp.tls.key = certs.path().join("ftp.key");
    })
    .await;

    // Without TLS, login is refused before any password is sent.
    let mut plain = AsyncFtpStream::connect(t.ftp_addr()).await.unwrap();
    let refused = reply(plain.login("alice", PASSWORD).await);
    assert!(refused.starts_with("534"), "{refused}");

    let mut ftp = AsyncRustlsFtpStream::connect(t.ftp_addr())
        .await
        .unwrap()
        .into_secure(connector(&cert), "localhost")
        .await
        .expect("AUTH TLS, PBSZ 0, PROT P");
    ftp.login("alice", PASSWORD).await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp.set_mode(Mode::Passive);
    let data = content(3, 1_500_000);
    ftp.put_file("secret.bin", &mut &data[..]).await.unwrap();
    let mut stream = ftp.retr_as_stream("secret.bin").await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    stream.finish().await.unwrap();
    assert!(back == data);
    // With TLS required, a plaintext data connection cannot be opened by PASV, EPSV or PORT.
    // With TLS required, the data channel cannot be switched to plaintext.
    let refused = reply(
        ftp.custom_command("PROT C", &[suppaftp::Status::CommandOk])
            .await,
    );
    assert!(refused.starts_with("534"), "PROT C: {refused}");
    ftp.quit().await.unwrap();

    let created = t
        .events()
        .await
        .into_iter()
        .find(|e| e.path.ends_with("/secret.bin"))
        .unwrap();
    assert_eq!(created.protocol, "ftps");

    // A session protected by AUTH TLS that never sent PROT P cannot open a data connection, by
    // PASV, EPSV or PORT.
    let tcp = tokio::net::TcpStream::connect(t.ftp_addr()).await.unwrap();
    let mut control = tokio::io::BufReader::new(tcp);
    assert!(next_reply(&mut control).await.starts_with("220"));
    assert!(send(&mut control, "AUTH TLS").await.starts_with("234"));
    let tls = suppaftp::tokio_rustls::TlsConnector::from(client_config(&cert))
        .connect("localhost".try_into().unwrap(), control.into_inner())
        .await
        .unwrap();
    let mut control = tokio::io::BufReader::new(tls);
    assert!(send(&mut control, "USER alice").await.starts_with("331"));
    assert!(send(&mut control, &format!("PASS {PASSWORD}"))
        .await
        .starts_with("230"));
    for command in ["PASV", "EPSV", "PORT 127,0,0,1,4,1"] {
        let refused = send(&mut control, command).await;
        assert!(refused.starts_with("534"), "{command}: {refused}");
    }

    // curl with --ssl-reqd: explicit TLS on control and data connections.
    let out = std::process::Command::new(program("curl"))
        .args(["-sS", "--fail", "--ssl-reqd", "--cacert"])
        .arg(&cert.cert_pem)
        .arg(format!(
            "ftp://alice:{PASSWORD}@localhost:{}/secret.bin",
            t.ftp_addr().port()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data);
    t.stop().await;
}

/// Sends one command on a raw control connection and reads its (one-line) reply.
async fn send<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    control: &mut tokio::io::BufReader<S>,
    command: &str,
) -> String {
    tokio::io::AsyncWriteExt::write_all(control.get_mut(), format!("{command}\r\n").as_bytes())
        .await
        .unwrap();
    next_reply(control).await
}

async fn next_reply<S: tokio::io::AsyncRead + Unpin>(
    control: &mut tokio::io::BufReader<S>,
) -> String {
    let mut reply = String::new();
    tokio::io::AsyncBufReadExt::read_line(control, &mut reply)
        .await
        .unwrap();
    reply
}

/// Implicit FTPS (TLS from the first byte, as on port 990) on `ftp.tls.implicit_listen`, driven by
/// curl (`ftps://`) and lftp (`ftps://`): uploads and downloads over protected control and data
/// connections, events say "ftps"; a plaintext client gets no greeting; AUTH TLS inside TLS is 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_ftps_works_with_curl_and_lftp() {
    let certs = tempfile::tempdir().unwrap();
    let cert = make_cert(certs.path());
    let t = start(Kind::Redis, |c| {
        c.ftp.tls.enabled = true;
        c.ftp.tls.cert = certs.path().join("ftp.crt");
        c.ftp.tls.key = certs.path().join("ftp.key");
        c.ftp.tls.implicit_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let port = t.gw().ftps_implicit_addr.expect("implicit listener").port();
    assert_ne!(port, t.ftp_addr().port());

    let data = content(5, 2_300_000);
    let local = certs.path().join("up.bin");
    std::fs::write(&local, &data).unwrap();
    let url = format!("ftps://alice:{PASSWORD}@localhost:{port}/implicit.bin");
    let ca = cert.cert_pem.to_str().unwrap();
    let curl = |args: &[&str]| client("curl", &[&["-sS", "--fail", "--cacert", ca], args].concat());
    curl(&["-T", local.to_str().unwrap(), &url]);
    assert!(curl(&[&url]) == data);
    let created = t
        .events()
        .await
        .into_iter()
        .find(|e| e.path.ends_with("/implicit.bin"))
        .unwrap();
    assert_eq!(created.protocol, "ftps");

    // lftp: ftps:// is implicit; a listing, an upload and a download over TLS data connections.
    let back = certs.path().join("back.bin");
    let script = format!(
        "set net:max-retries 1; set net:timeout 10; set ftp:passive-mode true; \
         set ssl:ca-file {}; set ftp:ssl-protect-data true; \
         open -u alice,{PASSWORD} ftps://localhost:{port}; put {} -o lftp.bin; cls -1; \
         get lftp.bin -o {}; bye",
        cert.cert_pem.display(),
        local.display(),
        back.display()
    );
    let out = client("lftp", &["-c", &script]);
    let listing = String::from_utf8_lossy(&out);
    assert!(listing.lines().any(|l| l == "lftp.bin"), "{listing}");
    assert!(std::fs::read(&back).unwrap() == data);

    // A plaintext client gets no greeting: the connection is closed after its bytes fail the
    // handshake.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"USER alice\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        raw.read_to_end(&mut got),
    )
    .await
    .expect("closed at once");
    assert!(
        read.is_err() || !String::from_utf8_lossy(&got).contains("220"),
        "{got:?}"
    );

    // AUTH TLS inside the TLS session is refused instead of nesting a second handshake.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = suppaftp::tokio_rustls::TlsConnector::from(client_config(&cert))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut control = tokio::io::BufReader::new(tls);
    let greeting = next_reply(&mut control).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let reply = send(&mut control, "AUTH TLS").await;
    assert!(reply.starts_with("503 "), "{reply}");

    // A data connection that fails its TLS handshake (a plaintext client) fails that transfer
    // with a reply, creates nothing, and the session goes on.
    assert!(send(&mut control, "USER alice").await.starts_with("331"));
    assert!(send(&mut control, &format!("PASS {PASSWORD}"))
        .await
        .starts_with("230"));
    let reply = send(&mut control, "EPSV").await;
    let data_port: u16 = reply
        .split("|||")
        .nth(1)
        .and_then(|r| r.split('|').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{reply}"));
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", data_port))
        .await
        .unwrap();
    assert!(
        send(&mut control, "STOR handshake.bin")
            .await
            .starts_with("150"),
        "STOR"
    );
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"not a TLS client hello\r\n")
        .await
        .unwrap();
    drop(plain);
    let reply = next_reply(&mut control).await;
    assert!(reply.starts_with('4'), "{reply}");
    assert!(send(&mut control, "NOOP").await.starts_with("200"));
    assert!(send(&mut control, "SIZE handshake.bin")
        .await
        .starts_with("550"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_ftps_without_tls_is_refused_with_the_key_named() {
    let certs = tempfile::tempdir().unwrap();
    let mut config = filegate::Config::default();
    config.ftp.listen = "127.0.0.1:0".parse().unwrap();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.ftp.tls.implicit_listen = Some("127.0.0.1:0".parse().unwrap());
    config.sftp.enabled = false;
    config.mqtt.mode = filegate::config::MqttMode::Off;
    config.server.data_dir = certs.path().join("data");
    config.storage.embedded.path = certs.path().join("data/f.redb");
    let err = filegate::serve::Gateway::start(&config)
        .await
        .err()
        .expect("refused");
    let message = format!("{err:#}");
    assert!(message.contains("ftp.tls.implicit_listen"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_passive_range_stops_startup_with_the_key_named() {
    // Both ports of the range are taken by someone else.
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = a.local_addr().unwrap().port();
    let b = std::net::TcpListener::bind(("127.0.0.1", port + 1));
    let end = if b.is_ok() { port + 1 } else { port };
    let dir = tempfile::tempdir().unwrap();
    let mut config = filegate::Config::default();
    config.ftp.listen = "127.0.0.1:0".parse().unwrap();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.ftp.passive_ports = port..=end;
    config.sftp.enabled = false;
    config.server.data_dir = dir.path().join("data");
    config.storage.embedded.path = dir.path().join("data/f.redb");
    let err = filegate::serve::Gateway::start(&config)
        .await
        .err()
        .expect("refused");
    let message = format!("{err:#}");
    assert!(message.contains("ftp.passive_ports"), "{message}");
    drop((a, b));
}
