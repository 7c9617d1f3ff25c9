//! filegate patch: line-ending conversion for `TYPE A` transfers (RFC 959 3.1.1.1). On the wire
//! an ASCII file's lines end in CRLF; stored, they end in LF. Uploads turn each CRLF into LF (a
//! lone CR stays); downloads turn each LF not already preceded by CR into CRLF, so a stored file
//! with CRLF endings is not doubled.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PIECE: usize = 64 * 1024;

/// Reads CRLF text from `inner` and yields it with LF line endings.
pub(crate) struct FromCrlf<R> {
    inner: R,
    scratch: Box<[u8]>,
    out: Vec<u8>,
    at: usize,
    cr_held: bool,
    eof: bool,
}

impl<R> FromCrlf<R> {
    pub(crate) fn new(inner: R) -> Self {
        FromCrlf {
            inner,
            scratch: vec![0; PIECE].into_boxed_slice(),
            out: Vec::with_capacity(PIECE + 1),
            at: 0,
            cr_held: false,
            eof: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FromCrlf<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.at == this.out.len() {
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.out.clear();
            this.at = 0;
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let data = read.filled();
            if data.is_empty() {
                this.eof = true;
                if this.cr_held {
                    this.cr_held = false;
                    this.out.push(b'\r');
                }
                continue;
            }
            for &b in data {
                if this.cr_held {
                    this.cr_held = false;
                    if b != b'\n' {
                        this.out.push(b'\r');
                    }
                }
                if b == b'\r' {
                    this.cr_held = true;
                } else {
                    this.out.push(b);
                }
            }
        }
        let n = buf.remaining().min(this.out.len() - this.at);
        buf.put_slice(&this.out[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

/// Writes LF text to `inner` with CRLF line endings. Bytes it accepted are written out at the
/// latest by `flush` or `shutdown`, which report any error doing so.
pub(crate) struct ToCrlf<W> {
    inner: W,
    out: Vec<u8>,
    at: usize,
    last_cr: bool,
}

impl<W> ToCrlf<W> {
    pub(crate) fn new(inner: W) -> Self {
        ToCrlf {
            inner,
            out: Vec::new(),
            at: 0,
            last_cr: false,
        }
    }
}

impl<W: AsyncWrite + Unpin> ToCrlf<W> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.at < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
        }
        self.out.clear();
        self.at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ToCrlf<W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let buf = &buf[..buf.len().min(PIECE)];
        for &b in buf {
            if b == b'\n' && !this.last_cr {
                this.out.push(b'\r');
            }
            this.out.push(b);
            this.last_cr = b == b'\r';
        }
        // Written now as far as the socket takes it; the rest by the next call.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn upload(wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FromCrlf::new(wire).read_to_end(&mut out).await.unwrap();
        out
    }

    async fn download(stored: &[u8], piece: usize) -> Vec<u8> {
        let mut w = ToCrlf::new(Vec::new());
        for p in stored.chunks(piece.max(1)) {
            w.write_all(p).await.unwrap();
        }
        w.flush().await.unwrap();
        w.inner
    }

    #[tokio::test]
    async fn uploads_end_lines_in_lf() {
        assert_eq!(upload(b"a;b\r\n1;2\r\n").await, b"a;b\n1;2\n");
        assert_eq!(upload(b"lone\rcr\r").await, b"lone\rcr\r");
        assert_eq!(upload(b"\r\r\n").await, b"\r\n");
        assert_eq!(upload(b"").await, b"");
        // A CRLF split across reads is still one line ending.
        let (client, mut server) = tokio::io::duplex(1);
        let task = tokio::spawn(async move {
            server.write_all(b"x\r").await.unwrap();
            server.write_all(b"\ny").await.unwrap();
        });
        let mut out = Vec::new();
        FromCrlf::new(client).read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        assert_eq!(out, b"x\ny");
    }

    #[tokio::test]
    async fn downloads_end_lines_in_crlf() {
        for piece in [1, 2, 3, 1 << 20] {
            assert_eq!(download(b"a\nb\n", piece).await, b"a\r\nb\r\n");
            assert_eq!(download(b"dos\r\nunix\n", piece).await, b"dos\r\nunix\r\n");
            assert_eq!(download(b"\n\n", piece).await, b"\r\n\r\n");
        }
        assert_eq!(download(b"", 1).await, b"");
    }
}
