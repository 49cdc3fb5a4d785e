//! The CLI's error type and its exit codes (documented in `keyhold --help` and the README):
//! 0 ok · 1 usage or local error · 2 not found · 3 permission or authentication ·
//! 4 conflict or key state · 5 server or network.

use std::process::ExitCode;

use keyhold_client::envelope::EnvelopeError;
use keyhold_client::stream::StreamError;
use keyhold_client::ClientError;

pub const EXIT_CODES_HELP: &str = "Exit codes:\n  0  success\n  1  usage or local error (bad arguments, unreadable file, refused encrypted file)\n  \
2  not found (key, alias, ring)\n  3  permission or authentication (bad API key, missing role)\n  \
4  conflict or key state (disabled, deleted, duplicate, too early)\n  5  server or network error\n  \
6  `keyhold audit verify`: the audit trail is broken";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Local(String),
    /// `keyhold audit verify` found the trail broken.
    #[error("{0}")]
    Broken(String),
    #[error("{0}")]
    Api(#[from] ClientError),
    #[error("{0}")]
    Format(#[from] StreamError),
    /// An API error with a hint about what to do next.
    #[error("{err}\n  hint: {hint}")]
    Hinted { err: ClientError, hint: String },
}

impl From<EnvelopeError> for CliError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Kms(c) => CliError::Api(c),
            EnvelopeError::Format(f) => CliError::Format(f),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Local(e.to_string())
    }
}

fn api_exit(e: &ClientError) -> u8 {
    match e {
        ClientError::Api { status, .. } => match status {
            404 => 2,
            401 | 403 => 3,
            409 | 410 | 422 => 4,
            400..=499 => 1,
            _ => 5,
        },
        ClientError::Auth { status, .. } if *status < 500 => 3,
        ClientError::Auth { .. } | ClientError::Transport { .. } | ClientError::Decode(_) => 5,
        ClientError::Invalid(_) => 1,
    }
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Usage(_) | CliError::Local(_) => 1,
            CliError::Broken(_) => 6,
            CliError::Format(StreamError::Io(_)) => 1,
            CliError::Format(_) => 1,
            CliError::Api(e) | CliError::Hinted { err: e, .. } => api_exit(e),
        })
    }

    /// Adds the hint that most often helps with an API error.
    pub fn with_default_hint(self) -> CliError {
        let CliError::Api(err) = self else {
            return self;
        };
        let hint = match (err.status(), err.code()) {
            (Some(401), _) | (Some(403), _) => {
                "the API key is invalid, or its role does not allow this action (a Reader may list, wrap and unwrap only)"
            }
            (Some(404), _) => "check the key id or alias with `keyhold keys list`",
            (_, Some("KEY_ACTION_INVALID_STATE_ERR")) => {
                "the key is not in a state that allows this action (see `keyhold keys show`)"
            }
            (_, Some("KEY_DELETED_ERR")) => "the key is deleted; `keyhold keys restore` brings it back within 30 days",
            _ => return CliError::Api(err),
        };
        CliError::Hinted {
            err,
            hint: hint.to_string(),
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;
