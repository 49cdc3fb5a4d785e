//! The Key Protect error envelope (keyprotect-api.md §7.1).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyhold_core::{Error, Reason};
use serde_json::json;

pub const MORE_INFO: &str = "https://cloud.ibm.com/apidocs/key-protect";

/// The reason code of an error response, left in the response's extensions for
/// the audit trail (so it never parses bodies).
#[derive(Debug, Clone, Copy)]
pub struct ReasonCode(pub &'static str);

/// A domain error plus what the request was doing ("Key could not be created").
#[derive(Debug)]
pub struct ApiError {
    pub error: Error,
    pub op: &'static str,
}

pub const DEFAULT_OP: &str = "The request could not be processed";

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError {
            error,
            op: DEFAULT_OP,
        }
    }
}

pub fn error_body(error: &Error, op: &str) -> serde_json::Value {
    let status =
        StatusCode::from_u16(error.reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let phrase = status.canonical_reason().unwrap_or("Error");
    let code = error.reason.code();
    let error_msg = if error.reason == Reason::Unauthorized {
        "Unauthorized: The user does not have access to the specified resource".to_string()
    } else {
        format!("{phrase}: {op}: Please see `reasons` for more details ({code})")
    };
    let mut reason = json!({"code": code, "message": error.message, "status": status.as_u16(), "moreInfo": MORE_INFO});
    if let Some(field) = error.field {
        reason["target"] = json!({"type": "field", "name": field});
    }
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1},
        "resources": [{"errorMsg": error_msg, "reasons": [reason]}]
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.reason.status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = error_body(&self.error, self.op).to_string();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        resp.extensions_mut()
            .insert(ReasonCode(self.error.reason.code()));
        resp
    }
}

pub trait OpContext<T> {
    /// Names the operation for the error message.
    fn op(self, op: &'static str) -> Result<T, ApiError>;
}

impl<T> OpContext<T> for Result<T, Error> {
    fn op(self, op: &'static str) -> Result<T, ApiError> {
        self.map_err(|error| ApiError { error, op })
    }
}
