//! The one error type of the use cases: what kind of failure it is (the command line maps it to
//! an exit code, the HTTP API to a status and a stable code) and a message for people.

/// What kind of failure a use case met: the command line maps it to an exit code, the HTTP API
/// will map it to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad usage or invalid input (a file, an id, a review that the rules refuse).
    Input,
    /// A configuration, policy or prompt that cannot be used.
    Config,
    /// Anything else: the database, the model, a failed run.
    Runtime,
    /// What was asked for does not exist (a proposal, run, experiment or token id).
    NotFound,
    /// The request conflicts with the current state (a decided or blocked proposal, a second
    /// approval by the same person).
    Conflict,
    /// No credentials, or credentials that identify nobody.
    Unauthenticated,
    /// The person is known but their role does not allow this.
    Forbidden,
    /// A cap was reached (an agent's submissions: `[mcp]`); the same request later may pass.
    TooMany,
}

impl ErrorKind {
    /// The stable code the HTTP API answers with in `{"code": …, "message": …}`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Input => "invalid_input",
            ErrorKind::Config => "configuration",
            ErrorKind::Runtime => "internal",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::TooMany => "too_many_requests",
        }
    }
}

/// A failed use case: its kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    pub kind: ErrorKind,
    pub message: String,
}

impl AppError {
    pub fn input(message: impl Into<String>) -> AppError {
        AppError {
            kind: ErrorKind::Input,
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>) -> AppError {
        AppError {
            kind: ErrorKind::Config,
            message: message.into(),
        }
    }

    pub fn runtime(message: impl Into<String>) -> AppError {
        AppError {
            kind: ErrorKind::Runtime,
            message: message.into(),
        }
    }

    pub fn new(kind: ErrorKind, message: impl Into<String>) -> AppError {
        AppError {
            kind,
            message: message.into(),
        }
    }

    /// The process exit code: 1 for runtime failures, 2 for everything the person can fix
    /// (usage, configuration, input, an unknown id, a refused review).
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Runtime => 1,
            _ => 2,
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            ErrorKind::Input => 400,
            ErrorKind::Config => 422,
            ErrorKind::Runtime => 500,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::TooMany => 429,
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AppError {}

macro_rules! runtime_from {
    ($($t:ty),*) => {$(
        impl From<$t> for AppError {
            fn from(err: $t) -> AppError {
                AppError::runtime(err.to_string())
            }
        }
    )*};
}
impl From<super::run::RunError> for AppError {
    fn from(err: super::run::RunError) -> AppError {
        match err {
            super::run::RunError::Open(err) => err,
            other => AppError::runtime(other.to_string()),
        }
    }
}

runtime_from!(crate::store::StoreError, serde_json::Error, std::io::Error);

pub type AppResult<T> = Result<T, AppError>;
