//! The RFC 3659 Machine List Single (`MLST`) command
//
// This command causes a listing to be sent from the server to the user. If the pathname
// specifies a file or directory, the server will return information about the file or
// directory. The information is returned in a machine-readable format.

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
use chrono::{DateTime, Utc};
use std::sync::Arc;

#[derive(Debug)]
pub struct Mlst {
    path: Option<String>,
}

impl Mlst {
    pub fn new(path: Option<String>) -> Self {
        Mlst { path }
    }
}

#[async_trait]
impl<Storage, User> CommandHandler<Storage, User> for Mlst
where
    User: UserDetail + 'static,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
{
    async fn handle(&self, args: CommandContext<Storage, User>) -> Result<Reply, ControlChanError> {
        let (user, storage, cwd, selected) = {
            let session = args.session.lock().await;
            (session.user.clone(), Arc::clone(&session.storage), session.cwd.clone(), session.mlst_facts)
        };

        let path = if let Some(p) = &self.path { p.clone().into() } else { cwd };

        let metadata = match storage.metadata((*user).as_ref().unwrap(), &path).await {
            Ok(m) => m,
            Err(e) => {
                return Ok(Reply::CodeAndMsg {
                    code: ReplyCode::FileError,
                    msg: e.to_string(),
                });
            }
        };

        let facts_str = format_facts(&metadata, selected);
        let response = format!(" {} {}", facts_str, path.display());
        Ok(Reply::new_multiline(ReplyCode::FileActionOkay, vec![" Listing", &response, "End"]))
    }
}

/// Format metadata into machine-readable facts string
///
/// Returns a semicolon-separated list of facts in the format defined by RFC 3659.
/// Both MLST and MLSD use the same fact format, so this function provides
/// consistent formatting for both commands.
///
/// # Arguments
/// * `metadata` - The file/directory metadata to format
///
/// # Returns
/// A string containing semicolon-separated facts like "type=file;size=1234;modify=20231201120000"
pub fn format_facts<M: Metadata>(metadata: &M, selected: MlstFacts) -> String {
    let mut facts = Vec::new();

    if selected.type_ {
        facts.push(if metadata.is_dir() { "type=dir" } else { "type=file" }.to_string());
    }

    if selected.size {
        facts.push(format!("size={}", metadata.len()));
    }

    if selected.modify
        && let Ok(modified) = metadata.modified()
    {
        let dt: DateTime<Utc> = modified.into();
        facts.push(format!("modify={}", dt.format("%Y%m%d%H%M%S")));
    }

    // Choosing not to implement create, unique, perm, lang, media-type, charset or most of the
    // UNIX.*, MACOS.* etc ones.

    if metadata.uid() > 0 {
        facts.push(format!("unix.uid={}", metadata.uid()));
    }

    if metadata.gid() > 0 {
        facts.push(format!("unix.gid={}", metadata.gid()));
    }

    if facts.is_empty() {
        return String::new();
    }
    format!("{};", facts.join(";"))
}

/// filegate patch: the facts MLST and MLSD send, as chosen with `OPTS MLST` (RFC 3659 7.9); all
/// of them until the client chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlstFacts {
    pub type_: bool,
    pub size: bool,
    pub modify: bool,
}

impl Default for MlstFacts {
    fn default() -> Self {
        MlstFacts {
            type_: true,
            size: true,
            modify: true,
        }
    }
}

impl MlstFacts {
    /// The facts named in an `OPTS MLST` argument (`type;size;`), case-insensitive; facts this
    /// server does not know are ignored, as the RFC says.
    pub fn parse(list: &str) -> Self {
        let mut chosen = MlstFacts {
            type_: false,
            size: false,
            modify: false,
        };
        for fact in list.split(';').map(|f| f.trim().to_ascii_lowercase()) {
            match fact.as_str() {
                "type" => chosen.type_ = true,
                "size" => chosen.size = true,
                "modify" => chosen.modify = true,
                _ => {}
            }
        }
        chosen
    }

    /// The facts as FEAT lists them (`type*;size*;modify*;`: a `*` marks the selected ones) or,
    /// with `marked = false`, as the reply to `OPTS MLST` lists the selected ones.
    pub fn describe(&self, marked: bool) -> String {
        let mut out = String::new();
        for (name, on) in [("type", self.type_), ("size", self.size), ("modify", self.modify)] {
            if marked {
                out.push_str(name);
                if on {
                    out.push('*');
                }
                out.push(';');
            } else if on {
                out.push_str(name);
                out.push(';');
            }
        }
        out
    }
}
