//! The RFC 959 Representation Type (`TYPE`) command
//
// The argument specifies the representation type as described
// in the Section on Data Representation and Storage.  Several
// types take a second parameter.  The first parameter is
// denoted by a single Telnet character, as is the second
// Format parameter for ASCII and EBCDIC; the second parameter
// for local byte is a decimal integer to indicate Bytesize.
// The parameters are separated by a <SP> (Space, ASCII code
// 32).
//
// The following codes are assigned for type:
//
//           \    /
// A - ASCII |    | N - Non-print
//           |-><-| T - Telnet format effectors
// E - EBCDIC|    | C - Carriage Control (ASA)
//           /    \
// I - Image
//
// L <byte size> - Local byte Byte size
//
//
// The default representation type is ASCII Non-print.  If the
// Format parameter is changed, and later just the first
// argument is changed, Format then returns to the Non-print
// default.

use crate::{
    auth::UserDetail,
    server::controlchan::{
        Reply, ReplyCode,
        error::ControlChanError,
        handler::{CommandContext, CommandHandler},
    },
    storage::{Metadata, StorageBackend},
};
use async_trait::async_trait;

/// The representation type asked for (filegate patch).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TypeParam {
    /// `A` or `A N`: line endings are converted on the data connection (CRLF on the wire).
    Ascii,
    /// `I` or `L 8`: bytes move as they are.
    Image,
    /// EBCDIC, `A T`, `A C`, or a byte size other than 8.
    Unsupported,
}

#[derive(Debug)]
pub struct Type {
    param: TypeParam,
}

impl Type {
    pub fn new(param: TypeParam) -> Self {
        Type { param }
    }
}

#[async_trait]
impl<Storage, User> CommandHandler<Storage, User> for Type
where
    User: UserDetail + 'static,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
{
    async fn handle(&self, args: CommandContext<Storage, User>) -> Result<Reply, ControlChanError> {
        let (ascii, text) = match self.param {
            TypeParam::Ascii => (true, "Type set to A: line endings are converted"),
            TypeParam::Image => (false, "Type set to I: binary"),
            TypeParam::Unsupported => {
                return Ok(Reply::new(
                    ReplyCode::CommandNotImplementedForParameter,
                    "Only TYPE A (or A N) and TYPE I (or L 8) are supported",
                ));
            }
        };
        args.session.lock().await.ascii = ascii;
        Ok(Reply::new(ReplyCode::CommandOkay, text))
    }
}
