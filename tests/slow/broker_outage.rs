//! A broker down for minutes (`OUTAGE_SECONDS`, default 120) while FTP uploads go on: the outbox
//! holds every event and delivers all of them, in order, once the broker is back.

use std::time::{Duration, Instant};

use crate::common::mqtt::{external, subscribe};
use crate::common::{start, until_true, Kind, PASSWORD};
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use test_support::Mosquitto;

/// How long the long outage lasts (`OUTAGE_SECONDS`, default two minutes).
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("OUTAGE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_for_minutes_under_load_loses_no_event() {
    let mut broker = Mosquitto::start_persistent();
    let mut sub = subscribe(broker.port(), None, "long-sub", false)
        .await
        .unwrap();
    let t = start(Kind::Redis, |c| external(c, &broker)).await;
    let store = t.store().clone();
    // FTP uploads go on, one after another, for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let uploads = {
        let stop = stop.clone();
        let addr = t.ftp_addr();
        tokio::spawn(async move {
            let mut ftp = AsyncFtpStream::connect(addr).await.unwrap();
            ftp.login("alice", PASSWORD).await.unwrap();
            ftp.transfer_type(FileType::Binary).await.unwrap();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = format!("upload {n}");
                ftp.put_file(format!("up{n}.txt"), &mut body.as_bytes())
                    .await
                    .expect("uploads work while the broker is down");
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = ftp.quit().await;
            n
        })
    };
    let wait_for = |seq: u64| {
        let store = store.clone();
        async move {
            until_true("uploads stalled", Duration::from_secs(30), || async {
                store.outbox_status().await.unwrap().last_seq >= seq
            })
            .await
        }
    };
    wait_for(20).await;
    broker.stop_gracefully();
    let down_at = Instant::now();
    let at_stop = store.outbox_status().await.unwrap().last_seq;
    tokio::time::sleep(outage()).await;
    let during = store.outbox_status().await.unwrap();
    assert!(
        during.last_seq > at_stop + 100,
        "uploads went on during the outage: {at_stop} → {}",
        during.last_seq
    );
    broker.restart();
    let up_at = Instant::now();
    // Back: the backlog drains while uploads still go on.
    let backlog = during.last_seq;
    until_true(
        "the backlog did not drain",
        Duration::from_secs(60),
        || async { store.outbox_status().await.unwrap().acked_seq >= backlog },
    )
    .await;
    let drained = up_at.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let uploaded = uploads.await.unwrap();
    let last = store.outbox_status().await.unwrap().last_seq;
    let seen = sub.collect(last as usize, Duration::from_secs(60)).await;
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "no gap in seq"
    );
    eprintln!(
        "broker down {:?}: {uploaded} uploads, {} events held in the outbox, drained {:?} after \
         the broker came back",
        up_at - down_at,
        backlog - at_stop,
        drained
    );
    t.stop().await;
}
