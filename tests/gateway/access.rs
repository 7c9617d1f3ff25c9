//! The shared user layer against a real store: jail, permissions, quotas, bans, partial uploads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use filegate::access::{Access, Protocol, Refusal, UserFs, UserPath};
use filegate::config::{Config, PartialUploads, Permission, UserConfig};
use storage_backend::{ErrorKind, EventKind, OpenOptions, Store, StoreConfig, StorePath};

fn user(name: &str, home: &str, permissions: &[Permission]) -> UserConfig {
    UserConfig {
        name: name.into(),
        password_hash: filegate::password::hash_password("secret").unwrap(),
        home: home.into(),
        permissions: permissions.to_vec(),
        ..UserConfig::default()
    }
}

async fn access(users: Vec<UserConfig>, tweak: impl FnOnce(&mut Config)) -> Arc<Access> {
    access_on_store(users, tweak).await.0
}

/// The layer with the store under it, for tests that look at what reached the store.
async fn access_on_store(
    users: Vec<UserConfig>,
    tweak: impl FnOnce(&mut Config),
) -> (Arc<Access>, Store) {
    let mut config = Config {
        users,
        ..Config::default()
    };
    config.limits.login_failures_per_ip = 3;
    tweak(&mut config);
    let store = Store::open(StoreConfig {
        chunk_size: 64,
        ..StoreConfig::in_memory()
    })
    .await
    .unwrap();
    let access = Access::new(&config, store.clone()).unwrap();
    access.set_failure_delay(Duration::ZERO);
    (access, store)
}

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 40000))
}

async fn login(a: &Access, name: &str) -> UserFs {
    a.login_password(name, "secret", peer(1), Protocol::Ftp)
        .await
        .unwrap()
}

fn at(fs: &UserFs, path: &str) -> UserPath {
    fs.resolve(&UserPath::root(), path.as_bytes()).unwrap()
}

#[tokio::test]
async fn jail_keeps_every_path_in_the_home() {
    let (a, store) = access_on_store(
        vec![
            user("alice", "/homes/alice", &Permission::ALL),
            user("bob", "/homes/bob", &Permission::ALL),
        ],
        |_| {},
    )
    .await;
    let bob = login(&a, "bob").await;
    let mut up = bob
        .open_write(&at(&bob, "secret.txt"), OpenOptions::REPLACE)
        .await
        .unwrap();
    up.append(b"bob's").await.unwrap();
    up.commit(None).await.unwrap();

    let alice = login(&a, "alice").await;
    for attempt in [
        "../bob/secret.txt",
        "/../../homes/bob/secret.txt",
        "..\\bob\\secret.txt",
        "/./../bob/secret.txt",
        "%2e%2e/bob/secret.txt",
    ] {
        let p = alice
            .resolve(&UserPath::root(), attempt.as_bytes())
            .unwrap();
        assert_eq!(
            alice.open_read(&p).await.err().unwrap().kind(),
            ErrorKind::NotFound,
            "{attempt}"
        );
    }
    for bad in [&b"a\0b"[..], b"\xff", b"x\r\nDELE y"] {
        assert_eq!(
            alice.resolve(&UserPath::root(), bad).unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
    }
    // Listing the root shows the home's content, never the homes beside it.
    let page = alice.list(&UserPath::root(), None, 100).await.unwrap();
    assert!(page.entries.is_empty());
    // Error messages name paths as the user sees them, never the home.
    let err = alice.open_read(&at(&alice, "nope/x")).await.err().unwrap();
    assert!(!err.message().contains("/homes/alice"), "{err}");
    assert_eq!(
        alice.rmdir(&UserPath::root()).await.unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    // What alice writes lands in her home in the store, with her name on the event.
    let mut up = alice
        .open_write(&at(&alice, "/../x.txt"), OpenOptions::REPLACE)
        .await
        .unwrap();
    up.append(b"hi").await.unwrap();
    up.commit(None).await.unwrap();
    assert_eq!(
        store
            .read_to_vec(&StorePath::parse("/homes/alice/x.txt").unwrap(), 10)
            .await
            .unwrap(),
        b"hi"
    );
    let last = store.events_after(0, 1000).await.unwrap().pop().unwrap();
    assert_eq!(
        (
            last.user.as_str(),
            last.protocol.as_str(),
            last.path.as_str()
        ),
        ("alice", "ftp", "/homes/alice/x.txt")
    );
}

#[tokio::test]
async fn permissions_are_enforced() {
    let a = access(
        vec![
            user("reader", "/r", &[Permission::List, Permission::Read]),
            user("dropbox", "/r", &[Permission::Write]),
        ],
        |_| {},
    )
    .await;
    let dropbox = login(&a, "dropbox").await;
    let mut up = dropbox
        .open_write(&at(&dropbox, "in.csv"), OpenOptions::REPLACE)
        .await
        .unwrap();
    up.append(b"1,2").await.unwrap();
    up.commit(None).await.unwrap();
    assert_eq!(
        dropbox
            .list(&UserPath::root(), None, 10)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        dropbox
            .open_read(&at(&dropbox, "in.csv"))
            .await
            .err()
            .unwrap()
            .kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        dropbox
            .delete(&at(&dropbox, "in.csv"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );

    let reader = login(&a, "reader").await;
    assert_eq!(
        reader
            .list(&UserPath::root(), None, 10)
            .await
            .unwrap()
            .entries
            .len(),
        1
    );
    assert_eq!(
        reader
            .open_read(&at(&reader, "in.csv"))
            .await
            .unwrap()
            .size(),
        3
    );
    for err in [
        reader
            .open_write(&at(&reader, "x"), OpenOptions::REPLACE)
            .await
            .err()
            .unwrap(),
        reader.delete(&at(&reader, "in.csv")).await.unwrap_err(),
        reader.mkdir(&at(&reader, "d")).await.unwrap_err(),
        reader
            .rename(&at(&reader, "in.csv"), &at(&reader, "y"), false)
            .await
            .unwrap_err(),
        reader.rmdir(&at(&reader, "d")).await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert!(err.message().contains("permission denied"), "{err}");
    }
}

#[tokio::test]
async fn quotas_hold_even_for_parallel_uploads() {
    let mut u = user("q", "/q", &Permission::ALL);
    u.quota_bytes = Some(1000);
    u.quota_files = Some(3);
    let a = access(vec![u], |_| {}).await;
    let fs = login(&a, "q").await;
    let mut one = fs
        .open_write(&at(&fs, "one"), OpenOptions::REPLACE)
        .await
        .unwrap();
    let mut two = fs
        .open_write(&at(&fs, "two"), OpenOptions::REPLACE)
        .await
        .unwrap();
    one.append(&[1; 600]).await.unwrap();
    let err = two.append(&[2; 500]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
    assert!(err.message().contains("quota exceeded"));
    two.append(&[2; 400]).await.unwrap();
    one.commit(None).await.unwrap();
    two.commit(None).await.unwrap();
    // Deleting gives the room back; replacing counts the difference only.
    fs.delete(&at(&fs, "two")).await.unwrap();
    let mut again = fs
        .open_write(&at(&fs, "one"), OpenOptions::REPLACE)
        .await
        .unwrap();
    again.append(&[3; 1000]).await.unwrap();
    again.commit(None).await.unwrap();
    assert_eq!(
        fs.open_write(&at(&fs, "tiny"), OpenOptions::REPLACE)
            .await
            .unwrap()
            .append(b"x")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::QuotaExceeded
    );
    // The file count limit.
    fs.open_write(&at(&fs, "one"), OpenOptions::REPLACE)
        .await
        .unwrap()
        .commit(None)
        .await
        .unwrap();
    for name in ["b", "c"] {
        fs.open_write(&at(&fs, name), OpenOptions::REPLACE)
            .await
            .unwrap()
            .commit(None)
            .await
            .unwrap();
    }
    assert_eq!(
        fs.open_write(&at(&fs, "d"), OpenOptions::REPLACE)
            .await
            .err()
            .unwrap()
            .kind(),
        ErrorKind::QuotaExceeded
    );
}

#[tokio::test]
async fn failed_logins_ban_the_address_for_every_protocol() {
    let a = access(vec![user("alice", "/a", &Permission::ALL)], |_| {}).await;
    for i in 0..2 {
        let e = a
            .login_password("alice", "wrong", peer(7), Protocol::Ftp)
            .await
            .err()
            .unwrap();
        assert_eq!(e, Refusal::BadCredentials, "attempt {i}");
    }
    // An unknown user counts the same; the third failure starts the ban.
    let e = a
        .login_password("mallory", "x", peer(7), Protocol::Sftp)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, Refusal::Banned(_)));
    // Banned everywhere now, even with the right password, even for a new connection.
    assert!(matches!(
        a.login_password("alice", "secret", peer(7), Protocol::Sftp)
            .await,
        Err(Refusal::Banned(_))
    ));
    assert!(matches!(a.admit(peer(7).ip()), Err(Refusal::Banned(_))));
    assert!(a.banned_for(peer(7).ip()).unwrap() > Duration::from_secs(200));
    // Other addresses are not affected.
    a.login_password("alice", "secret", peer(8), Protocol::Ftp)
        .await
        .unwrap();
    assert!(a.admit(peer(8).ip()).is_ok());
}

#[tokio::test]
async fn connection_limits() {
    let a = access(vec![], |c| {
        c.limits.max_connections = 3;
        c.limits.max_connections_per_ip = 2;
    })
    .await;
    let p1 = a.admit(peer(1).ip()).unwrap();
    let _p2 = a.admit(peer(1).ip()).unwrap();
    assert!(matches!(a.admit(peer(1).ip()), Err(Refusal::Limit(_))));
    let _p3 = a.admit(peer(2).ip()).unwrap();
    assert!(matches!(a.admit(peer(3).ip()), Err(Refusal::Limit(_))));
    drop(p1);
    assert!(a.admit(peer(3).ip()).is_ok());
}

#[tokio::test]
async fn cut_off_uploads_follow_partial_uploads() {
    for (policy, kept) in [
        (PartialUploads::Keep, true),
        (PartialUploads::Discard, false),
    ] {
        let (a, store) = access_on_store(vec![user("u", "/u", &Permission::ALL)], |c| {
            c.storage.partial_uploads = policy
        })
        .await;
        let fs = login(&a, "u").await;
        let mut up = fs
            .open_write(&at(&fs, "big"), OpenOptions::REPLACE)
            .await
            .unwrap();
        up.append(&[7; 300]).await.unwrap();
        let committed = up.cut_off().await.unwrap();
        assert_eq!(committed.is_some(), kept);
        let events = store.events_after(0, 100).await.unwrap();
        if kept {
            let meta = fs.stat(&at(&fs, "big")).await.unwrap();
            assert_eq!((meta.size, meta.complete), (300, false));
            assert_eq!(events.last().unwrap().kind, EventKind::FileIncomplete);
        } else {
            assert_eq!(
                fs.stat(&at(&fs, "big")).await.unwrap_err().kind(),
                ErrorKind::NotFound
            );
            assert!(events
                .iter()
                .all(|e| e.kind != EventKind::FileIncomplete && e.kind != EventKind::FileCreated));
        }
    }
}

#[tokio::test]
async fn repeated_logins_stay_correct() {
    let a = access(vec![user("alice", "/a", &Permission::ALL)], |_| {}).await;
    for _ in 0..3 {
        a.login_password("alice", "secret", peer(1), Protocol::Ftp)
            .await
            .unwrap();
    }
    // A remembered success never lets another password, or another user, in.
    assert_eq!(
        a.login_password("alice", "secreT", peer(2), Protocol::Ftp)
            .await
            .err(),
        Some(Refusal::BadCredentials)
    );
    assert_eq!(
        a.login_password("bob", "secret", peer(2), Protocol::Ftp)
            .await
            .err(),
        Some(Refusal::BadCredentials)
    );
}

/// Guesses sent at once are checked no faster than they can fail: each check in progress holds one
/// of the address's tries, so 50 parallel wrong passwords get at most `login_failures_per_ip`
/// checks before the ban, and the rest are refused as banned (issue 18, item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_get_no_more_checks_than_the_ban_allows() {
    let a = access(vec![user("alice", "/homes/alice", &Permission::ALL)], |c| {
        c.limits.login_failures_per_ip = 5;
    })
    .await;
    let guesses: Vec<_> = (0..50)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                a.login_password("alice", &format!("guess{i}"), peer(7), Protocol::Ftp)
                    .await
                    .err()
                    .expect("a wrong password")
            })
        })
        .collect();
    let mut checked = 0;
    for g in guesses {
        match g.await.unwrap() {
            Refusal::BadCredentials => checked += 1,
            Refusal::Banned(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(checked <= 5, "{checked} guesses were checked");
    assert!(a.banned_for(peer(7).ip()).is_some());
    // The right password from that address is refused too, until the ban ends.
    assert!(matches!(
        a.login_password("alice", "secret", peer(7), Protocol::Ftp)
            .await
            .err(),
        Some(Refusal::Banned(_))
    ));
}

/// An IPv6 client is its /64 (it cannot rotate through its network to dodge a ban), and an
/// IPv4-mapped address is the IPv4 address.
#[tokio::test]
async fn bans_cover_an_ipv6_network_and_mapped_ipv4_addresses() {
    let a = access(vec![user("alice", "/homes/alice", &Permission::ALL)], |c| {
        c.limits.login_failures_per_ip = 3;
    })
    .await;
    let v6 = |s: &str| SocketAddr::new(s.parse().unwrap(), 40000);
    for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"] {
        let _ = a
            .login_password("alice", "wrong", v6(host), Protocol::Sftp)
            .await;
    }
    assert!(a.banned_for("2001:db8:1:2::99".parse().unwrap()).is_some());
    assert!(a.banned_for("2001:db8:1:3::1".parse().unwrap()).is_none());
    for addr in ["::ffff:10.9.9.9", "10.9.9.9", "::ffff:10.9.9.9"] {
        let _ = a
            .login_password("alice", "wrong", v6(addr), Protocol::Ftp)
            .await;
    }
    assert!(a.banned_for("10.9.9.9".parse().unwrap()).is_some());
    assert!(a.admit("::ffff:10.9.9.9".parse().unwrap()).is_err());
}
