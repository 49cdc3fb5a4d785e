//! The client's one error type. An API error keeps the Key Protect reason code and
//! message, so a caller (and the CLI's exit code) can tell "not found" from "disabled".

use serde::Deserialize;

/// One entry of a Key Protect error's `reasons` list (keyprotect-api.md §7.1).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Reason {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub more_info: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Key Protect error (or any non-2xx status).
    #[error("{}", api_message(*status, code.as_deref(), message))]
    Api {
        status: u16,
        /// The first reason code, e.g. `KEY_NOT_FOUND_ERR`.
        code: Option<String>,
        /// The reason's message, or the `errorMsg` when there is no reason.
        message: String,
        reasons: Vec<Reason>,
    },
    /// The API key could not be exchanged for a token.
    #[error("authentication failed ({status}): {message}")]
    Auth { status: u16, message: String },
    /// No answer: connection refused, timeout, TLS failure.
    #[error("cannot reach {url}: {message}")]
    Transport { url: String, message: String },
    /// A 2xx answer that is not what the API promises.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// Bad client-side input (a base64 field, a key size, a configuration value).
    #[error("{0}")]
    Invalid(String),
}

fn api_message(status: u16, code: Option<&str>, message: &str) -> String {
    match code {
        Some(c) => format!("{message} ({c}, HTTP {status})"),
        None => format!("{message} (HTTP {status})"),
    }
}

impl ClientError {
    /// The HTTP status of an API or authentication error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Auth { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Key Protect reason code of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Builds an API error from a non-2xx answer, reading the Key Protect envelope
    /// when there is one.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> ClientError {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(default)]
            resources: Vec<ErrResource>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct ErrResource {
            #[serde(default)]
            error_msg: String,
            #[serde(default)]
            reasons: Vec<Reason>,
        }
        let parsed = serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|e| e.resources.into_iter().next());
        match parsed {
            Some(r) => {
                let first = r.reasons.first().cloned();
                let message = match &first {
                    Some(reason) if !reason.message.is_empty() => reason.message.clone(),
                    _ if !r.error_msg.is_empty() => r.error_msg.clone(),
                    _ => status_phrase(status).to_string(),
                };
                ClientError::Api {
                    status,
                    code: first.map(|f| f.code).filter(|c| !c.is_empty()),
                    message,
                    reasons: r.reasons,
                }
            }
            None => {
                // IAM endpoints answer in IAM's shape: {errorCode, errorMessage, context}.
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct IamErr {
                    error_code: String,
                    error_message: String,
                }
                match serde_json::from_slice::<IamErr>(body) {
                    Ok(e) => ClientError::Api {
                        status,
                        code: Some(e.error_code),
                        message: e.error_message,
                        reasons: Vec::new(),
                    },
                    Err(_) => ClientError::Api {
                        status,
                        code: None,
                        message: status_phrase(status).to_string(),
                        reasons: Vec::new(),
                    },
                }
            }
        }
    }
}

fn status_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unexpected status",
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_key_protect_envelope() {
        let body = br#"{"metadata":{"collectionType":"application/vnd.ibm.kms.error+json","collectionTotal":1},"resources":[{"errorMsg":"Not Found: Key could not be retrieved: Please see 'reasons' for more details (KEY_NOT_FOUND_ERR)","reasons":[{"code":"KEY_NOT_FOUND_ERR","message":"key does not exist","status":404,"moreInfo":"https://cloud.ibm.com/apidocs/key-protect"}]}]}"#;
        let e = ClientError::from_response(404, body);
        assert_eq!(e.code(), Some("KEY_NOT_FOUND_ERR"));
        assert_eq!(e.status(), Some(404));
        assert_eq!(
            e.to_string(),
            "key does not exist (KEY_NOT_FOUND_ERR, HTTP 404)"
        );
    }

    #[test]
    fn without_reasons_uses_error_msg_or_phrase() {
        let e = ClientError::from_response(
            401,
            br#"{"resources":[{"errorMsg":"Unauthorized: nope"}]}"#,
        );
        assert_eq!(e.code(), None);
        assert_eq!(e.to_string(), "Unauthorized: nope (HTTP 401)");
        let e = ClientError::from_response(502, b"<html>");
        assert_eq!(e.to_string(), "Bad Gateway (HTTP 502)");
    }
}
