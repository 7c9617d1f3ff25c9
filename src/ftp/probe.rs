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

/// How long after the end of the data a control connection that closes counts as closed "together
/// with" the data connection. The two FINs of a dead client leave its machine microseconds apart;
/// this leaves room for a loaded gateway or a network that delivers them apart, and delays the 226
/// of each upload by at most this much.
pub const CUT_OFF_WINDOW: Duration = Duration::from_millis(50);

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
    /// ended) now or within `window`; `None` while it is open. Bytes waiting on it (a command)
    /// mean it is alive.
    pub async fn client_gone(&self, window: Duration) -> Option<String> {
        let stream = self
            .stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(stream) = stream else {
            return Some("the session ended before the data connection".into());
        };
        let mut byte = [0u8; 1];
        match tokio::time::timeout(window, stream.peek(&mut byte)).await {
            Ok(Ok(0)) => Some("the control connection closed with the data connection".into()),
            Ok(Err(e)) => Some(format!("the control connection failed: {e}")),
            Ok(Ok(_)) | Err(_) => None,
        }
    }
}
