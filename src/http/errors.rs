//! The one place where store errors and login refusals become HTTP answers: a status code and an
//! RFC 9457 problem details body (`application/problem+json`) that says what went wrong in words.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use storage_backend::{ErrorKind, StoreError};

use crate::access::Refusal;

/// The HTTP status for a store error kind.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        // The request names something whose state forbids it: a file where a directory must be,
        // a directory where a file must be, a directory that still has entries.
        ErrorKind::AlreadyExists
        | ErrorKind::NotADirectory
        | ErrorKind::IsADirectory
        | ErrorKind::DirectoryNotEmpty => StatusCode::CONFLICT,
        // The file was replaced while it was being read: asking again gets the new content.
        ErrorKind::Changed => StatusCode::CONFLICT,
        ErrorKind::InvalidPath | ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::FileTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The problem `type` of a store error kind: a stable name clients can match on.
fn type_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "not-found",
        ErrorKind::AlreadyExists => "already-exists",
        ErrorKind::NotADirectory => "not-a-directory",
        ErrorKind::IsADirectory => "is-a-directory",
        ErrorKind::DirectoryNotEmpty => "directory-not-empty",
        ErrorKind::InvalidPath => "invalid-path",
        ErrorKind::InvalidArgument => "invalid-argument",
        ErrorKind::PermissionDenied => "permission-denied",
        ErrorKind::QuotaExceeded => "quota-exceeded",
        ErrorKind::FileTooLarge => "file-too-large",
        ErrorKind::Changed => "changed",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Internal => "internal",
    }
}

/// An RFC 9457 problem: the answer to every request that fails.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    /// A stable name (`not-found`, `unauthorized`, …); the body's `type` is `urn:filegate:problem:<name>`.
    pub name: &'static str,
    pub detail: String,
    /// Extra headers: `WWW-Authenticate` on 401, `Retry-After` on bans and overload, …
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// RFC 9457 extension members (`oldest_seq` on a 410 for events gone from the history).
    pub members: Vec<(&'static str, serde_json::Value)>,
}

impl Problem {
    pub fn new(status: StatusCode, name: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            name,
            detail: detail.into(),
            headers: Vec::new(),
            members: Vec::new(),
        }
    }

    /// Adds an extension member to the body.
    pub fn with_member(
        mut self,
        name: &'static str,
        value: impl Into<serde_json::Value>,
    ) -> Problem {
        self.members.push((name, value.into()));
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Problem {
        self.headers.push((name, value));
        self
    }

    /// A request without (usable) credentials: ask for HTTP Basic.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"filegate\", charset=\"UTF-8\""),
        )
    }

    fn retry_after(self, seconds: u64) -> Problem {
        self.with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "type": format!("urn:filegate:problem:{}", self.name),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        for (name, value) in &self.members {
            body[*name] = value.clone();
        }
        body
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        let kind = e.kind();
        match kind {
            ErrorKind::Unavailable | ErrorKind::Internal => {
                tracing::warn!(error = %e, kind = %kind, "http: storage failure")
            }
            _ => tracing::debug!(error = %e, kind = %kind, "http: request refused"),
        }
        let problem = Problem::new(status(kind), type_name(kind), e.message().to_string());
        if kind == ErrorKind::Unavailable {
            problem.retry_after(1)
        } else {
            problem
        }
    }
}

impl From<Refusal> for Problem {
    fn from(r: Refusal) -> Problem {
        match &r {
            // A ban is a rate limit on logins: 429 tells clients to wait, Retry-After for how long.
            Refusal::Banned(left) => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "banned", r.to_string())
                    .retry_after(left.as_secs())
            }
            Refusal::BadCredentials => Problem::unauthorized("wrong user name or password"),
            Refusal::Limit(_) | Refusal::Busy => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", r.to_string()).retry_after(1)
            }
            Refusal::Home(_) => {
                tracing::warn!(error = %r, "http: a home directory cannot be prepared");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    r.to_string(),
                )
                .retry_after(1)
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            self.body().to_string(),
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every store error kind has a deliberate status; a new kind fails here until it gets one.
    #[test]
    fn every_kind_maps_to_its_status() {
        for kind in ErrorKind::ALL {
            let expected = match kind {
                ErrorKind::NotFound => 404,
                ErrorKind::AlreadyExists
                | ErrorKind::NotADirectory
                | ErrorKind::IsADirectory
                | ErrorKind::DirectoryNotEmpty
                | ErrorKind::Changed => 409,
                ErrorKind::InvalidPath | ErrorKind::InvalidArgument => 400,
                ErrorKind::PermissionDenied => 403,
                ErrorKind::FileTooLarge => 413,
                ErrorKind::QuotaExceeded => 507,
                ErrorKind::Unavailable => 503,
                ErrorKind::Internal => 500,
            };
            assert_eq!(status(kind).as_u16(), expected, "{kind}");
            let p = Problem::from(StoreError::new(kind, "what happened"));
            let body = p.body();
            assert_eq!(body["status"], expected, "{kind}");
            assert_eq!(body["detail"], "what happened");
            assert_eq!(
                body["type"],
                format!("urn:filegate:problem:{}", type_name(kind))
            );
            assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
        }
        let names: std::collections::HashSet<_> = ErrorKind::ALL.map(type_name).into();
        assert_eq!(
            names.len(),
            ErrorKind::ALL.len(),
            "problem types are distinct"
        );
    }

    #[test]
    fn refusals_say_what_to_do() {
        let p = Problem::from(Refusal::BadCredentials);
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
        assert!(p
            .headers
            .iter()
            .any(|(n, v)| n == header::WWW_AUTHENTICATE && v.to_str().unwrap().contains("Basic")));
        let p = Problem::from(Refusal::Banned(Duration::from_secs(42)));
        assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(p
            .headers
            .contains(&(header::RETRY_AFTER, HeaderValue::from(42u64))));
        assert_eq!(
            Problem::from(Refusal::Busy).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
