//! The [RFC 959 List (`LIST`) command](https://www.rfc-editor.org/rfc/rfc959#section-4.1.3).
//!
//! Pathname whitespace follows [RFC 3659 section 2.2](https://www.rfc-editor.org/rfc/rfc3659#section-2.2).
//
// This command causes a list to be sent from the server to the
// passive DTP.  If the pathname specifies a directory or other
// group of files, the server should transfer a list of files
// in the specified directory.  If the pathname specifies a
// file then the server should send current information on the
// file.  A null argument implies the user's current working or
// default directory.  The data transfer is over the data
// connection in type ASCII or type EBCDIC.  (The user must
// ensure that the TYPE is appropriately ASCII or EBCDIC).
// Since the information on a file may vary widely from system
// to system, this information may be hard to use automatically
// in a program, but may be quite useful to a human user.

use crate::server::chancomms::DataChanCmd;
use crate::{
    auth::UserDetail,
    server::controlchan::{
        Command, Reply, ReplyCode,
        error::ControlChanError,
        handler::{CommandContext, CommandHandler},
    },
    storage::{Metadata, StorageBackend},
};
use async_trait::async_trait;

#[derive(Debug)]
pub struct List;

#[async_trait]
impl<Storage, User> CommandHandler<Storage, User> for List
where
    User: UserDetail + 'static,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
{
    async fn handle(&self, args: CommandContext<Storage, User>) -> Result<Reply, ControlChanError> {
        let mut session = args.session.lock().await;
        let (cmd, path_opt): (DataChanCmd, Option<String>) = match args.parsed_command.clone() {
            Command::List { path, options } => {
                let path_clone = path.clone();
                (DataChanCmd::List { path, options }, path_clone)
            }
            _ => panic!("Programmer error, expected command to be LIST"),
        };
        let logger = args.logger;
        if session.data_cmd_tx.is_some()
            && let Some(refused) = super::list::refuse_unlistable(&mut session, path_opt.as_deref(), &args.tx_control_chan).await
        {
            return Ok(refused);
        }
        match session.data_cmd_tx.take() {
            Some(tx) => {
                tokio::spawn(async move {
                    if let Err(err) = tx.send(cmd).await {
                        slog::warn!(logger, "LIST: could not notify data channel to respond with LIST. {}", err);
                    }
                });
                Ok(Reply::new(ReplyCode::FileStatusOkay, "Sending directory list"))
            }
            None => {
                if let Some(path) = path_opt {
                    slog::warn!(logger, "LIST: no data connection established for LISTing {:?}", path);
                } else {
                    slog::warn!(logger, "LIST: no data connection established for LIST");
                }
                Ok(Reply::new(ReplyCode::CantOpenDataConnection, "No data connection established"))
            }
        }
    }
}

/// filegate patch: a listing of a path that cannot be listed is refused (550) before the 150, not
/// after it: rclone and others take a 150 as "the directory exists". The refusal goes out like
/// CWD's (through the control channel); the data connection is closed. `None`: go on and list.
pub(crate) async fn refuse_unlistable<Storage, User>(
    session: &mut crate::server::session::Session<Storage, User>,
    path: Option<&str>,
    tx_control_chan: &tokio::sync::mpsc::Sender<crate::server::chancomms::ControlChanMsg>,
) -> Option<Reply>
where
    User: UserDetail + 'static,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
{
    // Options (`LIST -la`) and wildcards are left to the listing itself.
    let path = match path {
        Some(p) if p.starts_with('-') || p.contains(['*', '?', '[']) => return None,
        Some(p) if p != "." => session.cwd.join(p),
        _ => session.cwd.clone(),
    };
    let user = session.user.clone();
    let err = session.storage.metadata((*user).as_ref()?, &path).await.err()?;
    drop(session.data_cmd_tx.take());
    if let Some(abort) = session.data_abort_tx.take() {
        let _ = abort.try_send(());
    }
    let _ = tx_control_chan.send(crate::server::chancomms::ControlChanMsg::StorageError(err)).await;
    Some(Reply::none())
}
