//! Is the client still there when its upload's data connection ends?
//!
//! FTP's stream mode has no end-of-file mark but the close of the data connection, and a client
//! killed mid-upload (`kill`, `timeout`, a crash) closes it the same way: the kernel sends a FIN
//! for every socket of the dead process. What differs is the control connection: a client that
//! finished its file keeps it open to hear the 226; a dead one closed it too, in the same instant.
//! So an upload counts as complete only when the control connection is still open when the data
//! ends, and stays open for [`CUT_OFF_WINDOW`] after that (docs/ftp.md, "Cut-off uploads").

use std::net::TcpStream as StdTcpStream;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;

/// The longest wait, after the end of the data, for a control connection that closes "together
/// with" the data connection. The two FINs of a dead client leave its machine microseconds apart;
/// what can separate them on arrival is the path's varying delay, a fraction of its round trip. So
/// the wait is [`RTT_FACTOR`] times the connection's shortest round trip (the kernel's `min_rtt`),
/// at least [`MIN_WINDOW`] and at most this: 50 ms for clients far away, about a quarter of a
/// millisecond on loopback or a LAN, where a 50 ms wait for every file made small files crawl (19
/// files/s in one lftp session).
const CUT_OFF_WINDOW: Duration = Duration::from_millis(50);
/// The shortest wait, whatever the round trip: room for a busy gateway to see a FIN already sent.
const MIN_WINDOW: Duration = Duration::from_micros(250);
/// Round trips waited.
const RTT_FACTOR: u32 = 4;

/// A second handle on a session's control connection, used only to peek at it: libunftp owns and
/// reads the connection; peeking consumes nothing, and a FIN or reset stays visible after libunftp
/// has read it. Closed (by the session's task) when the session ends, so that it never keeps the
/// connection open after libunftp let go of it.
#[derive(Debug)]
pub struct ControlProbe {
    stream: Mutex<Option<Arc<TcpStream>>>,
}

impl ControlProbe {
    /// A probe on the control connection `stream` (a duplicate of its socket).
    pub fn new(stream: &TcpStream) -> std::io::Result<Self> {
        let dup = StdTcpStream::from(stream.as_fd().try_clone_to_owned()?);
        dup.set_nonblocking(true)?;
        Ok(ControlProbe {
            stream: Mutex::new(Some(Arc::new(TcpStream::from_std(dup)?))),
        })
    }

    /// The session is over: its client is gone for any upload still finishing.
    pub fn close(&self) {
        self.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Why the client is gone, if its control connection is closed (FIN or reset, or the session
    /// ended) now or within the window (see [`CUT_OFF_WINDOW`]); `None` while it is open. Bytes
    /// waiting on it (a command) mean it is alive.
    pub async fn client_gone(&self) -> Option<String> {
        let stream = self
            .stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(stream) = stream else {
            return Some("the session ended before the data connection".into());
        };
        if let Some(verdict) = peek_now(&stream) {
            return verdict;
        }
        let window = window(&stream);
        let mut byte = [0u8; 1];
        // A FIN (or a command) ends the wait at once; otherwise the client is alive once the
        // window has passed.
        tokio::select! {
            peeked = stream.peek(&mut byte) => verdict(peeked).flatten(),
            () = fine_sleep(window) => peek_now(&stream).flatten(),
        }
    }
}

/// Sleeps for `d` to the microsecond, which tokio's timers (millisecond ticks) cannot: a timerfd on
/// this task's own reactor, which wakes it on time. (A sleep on a blocking thread, the fallback,
/// costs the thread's timer slack, 50 µs, and two hand-offs between threads on top of `d`: about
/// 0.1 ms of each of lftp's small files, 1.4 ms then; docs/performance.md.)
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
async fn fine_sleep(d: Duration) {
    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    let armed = Timespec::try_from(d)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        .and_then(|value| {
            let fd = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )?;
            let spec = Itimerspec {
                it_interval: Timespec::default(),
                it_value: value,
            };
            timerfd_settime(&fd, TimerfdTimerFlags::empty(), &spec)?;
            // SAFETY: the AsyncFd owns `fd`, so it stays open and the same for its lifetime.
            let timer = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            Ok(timer?)
        });
    match armed {
        // Readable once it has expired; dropping it closes the fd.
        Ok(timer) => drop(timer.readable().await),
        Err(_) => blocking_sleep(d).await,
    }
}

#[cfg(not(target_os = "linux"))]
async fn fine_sleep(d: Duration) {
    // tokio's timers tick in milliseconds: fine for the longer windows of distant clients.
    if d >= Duration::from_millis(2) {
        tokio::time::sleep(d).await
    } else {
        blocking_sleep(d).await
    }
}

async fn blocking_sleep(d: Duration) {
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
}

/// What the control connection shows right now without waiting.
fn peek_now(stream: &TcpStream) -> Option<Option<String>> {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    verdict(socket2::SockRef::from(stream).peek(&mut byte))
}

/// A peek's meaning: `Some(Some(why))` closed, `Some(None)` alive (a command waiting), `None`
/// nothing yet.
fn verdict(peeked: std::io::Result<usize>) -> Option<Option<String>> {
    match peeked {
        Ok(0) => Some(Some(
            "the control connection closed with the data connection".into(),
        )),
        Ok(_) => Some(None),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => Some(Some(format!("the control connection failed: {e}"))),
    }
}

/// How long to wait for the control connection's FIN after the data connection's.
fn window(stream: &TcpStream) -> Duration {
    match min_rtt(stream) {
        Some(rtt) => (rtt * RTT_FACTOR).clamp(MIN_WINDOW, CUT_OFF_WINDOW),
        None => CUT_OFF_WINDOW,
    }
}

/// The shortest round trip the kernel measured on the connection (`TCP_INFO`'s `tcpi_min_rtt`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn min_rtt(stream: &TcpStream) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large, and reports
    // how many it wrote; the fd is open for as long as `stream` is borrowed.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // Kernels before 4.6 do not fill in `tcpi_min_rtt`; the struct is zeroed, so that reads as 0.
    let filled = std::mem::offset_of!(libc::tcp_info, tcpi_min_rtt) + 4;
    if rc != 0 || (len as usize) < filled {
        return None;
    }
    // SAFETY: zero-initialised, and the kernel filled in at least up to `tcpi_min_rtt`.
    let info = unsafe { info.assume_init() };
    match info.tcpi_min_rtt {
        0 | u32::MAX => None,
        us => Some(Duration::from_micros(us.into())),
    }
}

#[cfg(not(target_os = "linux"))]
fn min_rtt(_stream: &TcpStream) -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    #[tokio::test]
    async fn loopback_waits_the_shortest_window_and_sees_both_ends() {
        let (mut s2, mut client) = pair().await;
        // A few exchanges give the kernel a round trip to measure.
        for _ in 0..3 {
            client.write_all(b"NOOP\r\n").await.unwrap();
            let mut buf = [0u8; 6];
            tokio::io::AsyncReadExt::read_exact(&mut s2, &mut buf)
                .await
                .unwrap();
            s2.write_all(b"200\r\n").await.unwrap();
            let mut reply = [0u8; 5];
            tokio::io::AsyncReadExt::read_exact(&mut client, &mut reply)
                .await
                .unwrap();
        }
        assert_eq!(
            window(&s2),
            MIN_WINDOW,
            "loopback round trip: {:?}",
            min_rtt(&s2)
        );
        let probe = ControlProbe::new(&s2).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(probe.client_gone().await, None, "open and silent: alive");
        assert!(
            started.elapsed() >= MIN_WINDOW,
            "alive only after the whole window: {:?}",
            started.elapsed()
        );
        client.write_all(b"ABOR\r\n").await.unwrap();
        assert_eq!(probe.client_gone().await, None, "a command waiting: alive");
        drop(client);
        let mut buf = [0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut s2, &mut buf)
            .await
            .unwrap();
        assert!(probe.client_gone().await.is_some(), "closed: gone");
        probe.close();
        assert!(probe.client_gone().await.is_some(), "session over: gone");
    }
}
