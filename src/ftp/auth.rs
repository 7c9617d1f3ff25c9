//! FTP logins through the shared user layer. libunftp's default authenticator accepts everyone; this
//! one is the only one ever installed. One instance serves one connection, so it knows the client's
//! full address and hands the logged-in user's [`UserFs`] to the session.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use unftp_core::auth::{
    AuthenticationError, Authenticator, ChannelEncryptionState, Credentials, Principal, UserDetail,
    UserDetailError, UserDetailProvider,
};

use crate::access::{Access, ConnectionPermit, Protocol, Refusal, UserFs};

/// The user of one FTP session: their view of the store.
pub struct FtpUser {
    pub fs: UserFs,
}

impl UserDetail for FtpUser {
    fn home(&self) -> Option<&Path> {
        None
    }
}

impl std::fmt::Display for FtpUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.fs.user())
    }
}

impl std::fmt::Debug for FtpUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtpUser")
            .field("user", &self.fs.user())
            .finish()
    }
}

/// Authenticates one connection's logins and provides the session's user.
pub struct ConnectionAuth {
    access: Arc<Access>,
    peer: SocketAddr,
    /// The user of the last successful login, until libunftp asks for it.
    pending: Mutex<Option<UserFs>>,
    /// The connection's slot, told when it logs in (it stops counting as not logged in, and its
    /// login deadline no longer applies).
    permit: Arc<ConnectionPermit>,
}

impl ConnectionAuth {
    pub fn new(access: Arc<Access>, peer: SocketAddr, permit: Arc<ConnectionPermit>) -> Self {
        ConnectionAuth {
            access,
            peer,
            pending: Mutex::new(None),
            permit,
        }
    }
}

impl std::fmt::Debug for ConnectionAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionAuth")
            .field("peer", &self.peer)
            .finish()
    }
}

#[async_trait]
impl Authenticator for ConnectionAuth {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let protocol = match creds.command_channel_security {
            ChannelEncryptionState::Tls => Protocol::Ftps,
            ChannelEncryptionState::Plaintext => Protocol::Ftp,
        };
        let result = match &creds.password {
            Some(password) => {
                self.access
                    .login_password(username, password, self.peer, protocol)
                    .await
            }
            None => Err(self.access.failed(username, self.peer, protocol).await),
        };
        match result {
            Ok(fs) => {
                self.permit.logged_in();
                *self.pending.lock().unwrap() = Some(fs);
                Ok(Principal {
                    username: username.to_string(),
                })
            }
            Err(Refusal::Banned(_)) => Err(AuthenticationError::IpDisallowed),
            Err(Refusal::Home(why)) => {
                tracing::error!(
                    user = username,
                    "ftp: cannot prepare the home directory: {why}"
                );
                Err(AuthenticationError::ImplPropagated(why, None))
            }
            Err(_) => Err(AuthenticationError::BadPassword),
        }
    }

    /// A client certificate alone never logs anyone in.
    async fn cert_auth_sufficient(&self, _username: &str) -> bool {
        false
    }
}

#[async_trait]
impl UserDetailProvider for ConnectionAuth {
    type User = FtpUser;

    async fn provide_user_detail(&self, principal: &Principal) -> Result<FtpUser, UserDetailError> {
        match self.pending.lock().unwrap().take() {
            Some(fs) if fs.user() == principal.username => Ok(FtpUser { fs }),
            _ => Err(UserDetailError::UserNotFound {
                username: principal.username.clone(),
            }),
        }
    }
}
