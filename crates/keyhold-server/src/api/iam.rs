//! The IAM token endpoints the Key Protect clients call (keyprotect-api.md §2):
//! `POST /identity/token` and `POST /oidc/token` exchange an API key (or a
//! refresh token) for a signed access token. Errors use IAM's own error shape.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::ctx::RawBody;
use super::{blocking, AppState};
use crate::auth::token::KeyBinding;
use crate::auth::{apikey, Principal, PrincipalKind};

const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

pub(crate) fn iam_error(status: StatusCode, code: &'static str, message: &str) -> Response {
    let body = json!({"errorCode": code, "errorMessage": message,
        "context": {"requestId": uuid::Uuid::new_v4().to_string()}});
    let mut resp = (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response();
    resp.extensions_mut().insert(super::error::ReasonCode(code));
    resp
}

pub async fn token(State(st): State<AppState>, RawBody(bytes): RawBody) -> Response {
    let form: Vec<(String, String)> = match serde_urlencoded::from_bytes(&bytes) {
        Ok(f) => f,
        Err(_) => {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "BXNIM0109E",
                "The request body is not a valid form",
            )
        }
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| Zeroizing::new(v.clone()))
    };
    let grant = field("grant_type")
        .map(|g| g.to_string())
        .unwrap_or_default();
    let (principal, binding): (Principal, KeyBinding) = match grant.as_str() {
        APIKEY_GRANT => {
            let Some(key) = field("apikey").filter(|k| !k.is_empty()) else {
                return iam_error(
                    StatusCode::BAD_REQUEST,
                    "BXNIM0415E",
                    "Provided API key could not be found",
                );
            };
            let hash = apikey::hash(&key);
            let found = blocking(&st, move |svc| {
                svc.store().find_api_key(&hash).map_err(|_| {
                    keyhold_core::Error::unavailable("The identity store is unavailable")
                })
            })
            .await;
            match found {
                Ok(Some(rec)) => match PrincipalKind::parse(&rec.principal_kind) {
                    Some(kind) => (
                        Principal {
                            id: rec.principal_id,
                            kind,
                            account_id: rec.account_id,
                        },
                        KeyBinding {
                            fp: apikey::fingerprint(&rec.hash),
                            id: rec.id,
                        },
                    ),
                    None => {
                        return iam_error(
                            StatusCode::BAD_REQUEST,
                            "BXNIM0415E",
                            "Provided API key could not be found",
                        )
                    }
                },
                Ok(None) => {
                    return iam_error(
                        StatusCode::BAD_REQUEST,
                        "BXNIM0415E",
                        "Provided API key could not be found",
                    )
                }
                Err(_) => {
                    return iam_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "BXNIM0503E",
                        "The identity store is unavailable",
                    )
                }
            }
        }
        "refresh_token" => {
            let token = field("refresh_token").unwrap_or_default();
            let refused = || {
                iam_error(
                    StatusCode::BAD_REQUEST,
                    "BXNIM0407E",
                    "Provided refresh token is invalid or expired",
                )
            };
            let Ok((principal, Some(binding))) = st.0.tokens.refresh_grant(&token) else {
                return refused();
            };
            // The API key the token descends from must still exist, unrotated.
            let (account, key_id) = (principal.account_id.clone(), binding.id.clone());
            let current = blocking(&st, move |svc| {
                svc.store().get_api_key(&account, &key_id).map_err(|_| {
                    keyhold_core::Error::unavailable("The identity store is unavailable")
                })
            })
            .await;
            match current {
                Ok(Some(rec))
                    if rec.principal_id == principal.id
                        && bool::from(
                            apikey::fingerprint(&rec.hash)
                                .as_bytes()
                                .ct_eq(binding.fp.as_bytes()),
                        ) =>
                {
                    (principal, binding)
                }
                Ok(_) => return refused(),
                Err(_) => {
                    return iam_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "BXNIM0503E",
                        "The identity store is unavailable",
                    )
                }
            }
        }
        _ => {
            return iam_error(
                StatusCode::BAD_REQUEST,
                "BXNIM0109E",
                "Unsupported or missing grant_type",
            )
        }
    };
    super::audit::note(|slot| slot.principal(&principal));
    match st.0.tokens.issue_bound(&principal, Some(&binding)) {
        Ok(t) => {
            let body = json!({"access_token": t.access_token, "refresh_token": t.refresh_token, "token_type": "Bearer",
                "expires_in": t.expires_in, "expiration": t.expiration, "scope": "ibm openid"});
            (
                StatusCode::OK,
                [
                    ("content-type", "application/json"),
                    ("cache-control", "no-store"),
                ],
                body.to_string(),
            )
                .into_response()
        }
        Err(_) => iam_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "BXNIM0500E",
            "The token could not be issued",
        ),
    }
}

pub async fn jwks(State(st): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        st.0.tokens.jwks().to_string(),
    )
        .into_response()
}
