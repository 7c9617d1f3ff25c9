use super::{
    Reply,
    command::Command,
    error::{ControlChanError, ControlChanErrorKind},
    line_parser,
};

use bytes::BytesMut;
use std::io::Write;
use tokio_util::codec::{Decoder, Encoder};

/// filegate patch: the longest command line taken, `\r\n` included. RFC 959 sets no limit; real
/// lines are a command and a path (at most a few KiB). Without a limit, a client that never sends
/// `\n` grows this buffer until the process runs out of memory, before logging in.
pub const MAX_LINE: usize = 8192;

// FTPCodec implements tokio's `Decoder` and `Encoder` traits for the control channel, that we'll
// use to decode FTP commands and encode their responses.
pub struct FtpCodec {
    // Stored index of the next index to examine for a '\n' character. This is used to optimize
    // searching. For example, if `decode` was called with `abc`, it would hold `3`, because that
    // is the next index to examine. The next time `decode` is called with `abcde\n`, we will only
    // look at `de\n` before returning.
    next_index: usize,
}

impl FtpCodec {
    pub fn new() -> Self {
        FtpCodec { next_index: 0 }
    }
}

impl Decoder for FtpCodec {
    // filegate patch: a line that does not parse is an item (answered 501, the session goes on),
    // not an error of the stream: tokio-util's `Framed` ends the stream after a decoder error,
    // which closed the session on any rejected command (`OPTS MLST …`, `MODE Z`).
    type Item = Result<Command, ControlChanError>;
    type Error = ControlChanError;

    // Here we decode the incoming bytes into a meaningful command. We'll split on newlines, and
    // parse the resulting line using `Command::parse()`. This method will be called by tokio.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if let Some(newline_offset) = buf[self.next_index..].iter().position(|b| *b == b'\n') {
            let newline_index = newline_offset + self.next_index;
            if newline_index >= MAX_LINE {
                buf.clear();
                self.next_index = 0;
                return Err(ControlChanError::new(ControlChanErrorKind::LineTooLong));
            }
            let mut line = buf.split_to(newline_index + 1);
            self.next_index = 0;
            // filegate patch: Telnet commands before a command are dropped (RFC 959 4.1.3): lftp
            // and others send ABOR after "IAC IP IAC DM" (Interrupt Process, Synch), whose IAC may
            // also have gone out of band. Left in, they made the line invalid UTF-8, the ABOR was
            // never seen, and the client waited for its reply until its own timeout.
            let telnet = line.iter().take_while(|b| **b >= 0xF0).count();
            let _ = line.split_to(telnet);
            Ok(Some(line_parser::parse(line).map_err(ControlChanError::from)))
        } else if buf.len() >= MAX_LINE {
            buf.clear();
            self.next_index = 0;
            Err(ControlChanError::new(ControlChanErrorKind::LineTooLong))
        } else {
            self.next_index = buf.len();
            Ok(None)
        }
    }
}

impl Encoder<Reply> for FtpCodec {
    type Error = ControlChanError;

    // Here we encode the outgoing response
    fn encode(&mut self, reply: Reply, buf: &mut BytesMut) -> Result<(), Self::Error> {
        let mut buffer = vec![];
        match reply {
            Reply::None => {
                return Ok(());
            }
            Reply::CodeAndMsg { code, msg } => {
                if msg.is_empty() {
                    writeln!(buffer, "{}\r", code as u32)?;
                } else {
                    writeln!(buffer, "{} {}\r", code as u32, msg)?;
                }
            }
            Reply::MultiLine { code, mut lines } => {
                // Get the last line since it needs to be preceded by the response code.
                let last_line = lines.pop().unwrap_or_default();

                // Lines starting with a digit should be indented
                for it in lines.iter_mut() {
                    if it.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                        it.insert(0, ' ');
                    }
                }
                if lines.is_empty() {
                    writeln!(buffer, "{} {}\r", code as u32, last_line)?;
                } else {
                    write!(buffer, "{}-{}\r\n{} {}\r\n", code as u32, lines.join("\r\n"), code as u32, last_line)?;
                }
            }
        }
        buf.extend(&buffer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ReplyCode;
    use super::*;

    #[test]
    fn telnet_interrupt_before_abor_is_dropped() {
        let mut codec = FtpCodec::new();
        for sent in [&b"\xff\xf4\xff\xf2ABOR\r\n"[..], b"\xff\xf4\xf2ABOR\r\n", b"\xf2ABOR\r\n"] {
            let mut buf = BytesMut::from(sent);
            let parsed = codec.decode(&mut buf).unwrap().unwrap().unwrap();
            assert_eq!(parsed, Command::Abor, "{sent:?}");
        }
    }

    #[test]
    fn a_rejected_line_is_an_item_not_the_end_of_the_stream() {
        let mut codec = FtpCodec::new();
        let mut buf = BytesMut::from(&b"MODE Z\r\nNOOP\r\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().unwrap().is_err());
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().unwrap(), Command::Noop);
    }

    #[test]
    fn encode_multiline_reply_with_blank_line_does_not_panic() {
        let mut codec = FtpCodec::new();
        let mut buf = BytesMut::new();
        let reply = Reply::new_multiline(ReplyCode::HelpMessage, vec!["Usage: foo", "", "Options:"]);

        codec.encode(reply, &mut buf).unwrap();

        assert_eq!(buf, "214-Usage: foo\r\n\r\n214 Options:\r\n".as_bytes());
    }
}

#[cfg(test)]
mod line_limit_tests {
    use super::*;

    #[test]
    fn a_line_without_end_is_refused_at_the_limit_and_its_bytes_dropped() {
        let mut codec = FtpCodec::new();
        let mut buf = BytesMut::from(&vec![b'A'; MAX_LINE - 1][..]);
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        buf.extend_from_slice(b"A");
        let err = codec.decode(&mut buf).err().expect("too long");
        assert_eq!(err.kind(), &ControlChanErrorKind::LineTooLong);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_long_line_that_ends_is_refused_and_a_short_one_parses() {
        let mut codec = FtpCodec::new();
        let mut long = b"STOR ".to_vec();
        long.extend(vec![b'x'; MAX_LINE]);
        long.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&long[..]);
        assert_eq!(codec.decode(&mut buf).err().expect("too long").kind(), &ControlChanErrorKind::LineTooLong);
        let mut buf = BytesMut::from(&b"NOOP\r\n"[..]);
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Ok(_)))));
    }
}
