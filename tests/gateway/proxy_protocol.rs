//! Behind a load balancer: with `proxy_protocol = true`, FTP and SFTP take the client's address
//! from the PROXY header (v1 or v2) — in bans, connection limits and events — and refuse
//! connections that do not come through the proxy. The proxy here is a relay in the test that
//! prepends a header naming a chosen client address, as HAProxy's `send-proxy` does.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{client_key, content, program, sftp_on, start, Kind, PASSWORD};
use suppaftp::tokio::AsyncFtpStream;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A relay on a free port that forwards every connection to `target`, first sending a PROXY
/// header that says the connection comes from `client` (v2 when `v2`, else v1).
async fn relay(target: SocketAddr, client: SocketAddr, v2: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut outbound = TcpStream::connect(target).await.unwrap();
                let header = if v2 {
                    ppp::v2::Builder::with_addresses(
                        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                        ppp::v2::Protocol::Stream,
                        (client, target),
                    )
                    .build()
                    .unwrap()
                } else {
                    format!(
                        "PROXY TCP4 {} {} {} {}\r\n",
                        client.ip(),
                        target.ip(),
                        client.port(),
                        target.port()
                    )
                    .into_bytes()
                };
                outbound.write_all(&header).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_proxy_are_told_apart() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "alice_key");
    let t = start(Kind::Embedded, |c| {
        sftp_on(c);
        c.users[0].authorized_keys = vec![public];
        c.ftp.proxy_protocol = true;
        c.sftp.proxy_protocol = true;
        c.ftp.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.sftp.trusted_proxies = c.ftp.trusted_proxies.clone();
        c.limits.login_failures_per_ip = 2;
    })
    .await;
    let attacker = relay(t.ftp_addr(), "203.0.113.7:40000".parse().unwrap(), false).await;
    let user = relay(t.ftp_addr(), "198.51.100.9:41000".parse().unwrap(), true).await;

    // Two wrong passwords from one client behind the proxy ban that client …
    for _ in 0..2 {
        let mut ftp = AsyncFtpStream::connect(attacker).await.unwrap();
        assert!(ftp.login("alice", "wrong").await.is_err());
    }
    let refused = match AsyncFtpStream::connect(attacker).await {
        Ok(mut ftp) => ftp.login("alice", PASSWORD).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "the banned client got in");
    // … and no one else behind the same proxy.
    let mut ftp = AsyncFtpStream::connect(user).await.unwrap();
    ftp.login("alice", PASSWORD).await.unwrap();
    ftp.put_file("via-proxy.txt", &mut &b"hello"[..])
        .await
        .unwrap();
    ftp.quit().await.unwrap();

    // A connection that skips the proxy is closed without a greeting.
    let direct = tokio::time::timeout(
        Duration::from_secs(10),
        AsyncFtpStream::connect(t.ftp_addr()),
    )
    .await
    .expect("the gateway closes it");
    assert!(
        direct.is_err(),
        "a connection without a PROXY header was served"
    );

    // SFTP through a v1 relay, from another client address.
    let sftp_relay = relay(t.sftp_addr(), "192.0.2.44:42000".parse().unwrap(), false).await;
    let local = t.temp_path("up.bin");
    std::fs::write(&local, content(3, 100_000)).unwrap();
    let batch = t.temp_path("batch");
    std::fs::write(&batch, format!("put {} sftp.bin\n", local.display())).unwrap();
    let out = std::process::Command::new(program("sftp"))
        .arg("-b")
        .arg(&batch)
        .args(["-P", &sftp_relay.port().to_string()])
        .args(t.ssh_options(&key))
        .arg("alice@127.0.0.1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Events name the clients, not the proxy.
    let events = t.events().await;
    let peer_of = |name: &str| {
        events
            .iter()
            .find(|e| e.path.ends_with(name))
            .map(|e| e.peer.clone())
            .unwrap_or_else(|| panic!("no event for {name}: {events:?}"))
    };
    assert!(peer_of("via-proxy.txt").starts_with("198.51.100.9:"));
    assert!(peer_of("sftp.bin").starts_with("192.0.2.44:"));
    t.stop().await;
}

/// A PROXY header from an address that is not in `trusted_proxies` is not believed: the connection
/// is closed before the greeting, whatever client it names (issue 18, item 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_from_untrusted_addresses_are_refused() {
    let t = start(Kind::Embedded, |c| {
        sftp_on(c);
        c.ftp.proxy_protocol = true;
        c.sftp.proxy_protocol = true;
        // The test's relay connects from 127.0.0.1, which is not the proxy named here.
        c.ftp.trusted_proxies = vec!["192.0.2.1/32".parse().unwrap()];
        c.sftp.trusted_proxies = c.ftp.trusted_proxies.clone();
    })
    .await;
    for target in [t.ftp_addr(), t.sftp_addr()] {
        let spoofer = relay(target, "198.51.100.9:41000".parse().unwrap(), true).await;
        let mut s = TcpStream::connect(spoofer).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut got),
        )
        .await
        .expect("the gateway closes the connection");
        assert!(
            read.is_err() || got.is_empty(),
            "{target}: an untrusted PROXY header was served: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // Nothing was let in, so nothing happened.
    assert!(t.events().await.is_empty());
    t.stop().await;
}
