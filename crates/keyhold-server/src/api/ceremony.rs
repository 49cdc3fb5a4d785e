//! `/ceremony/v1`: the master-key ceremony's status and its signed commands.
//! Both need a valid bearer token of the crypto instance's account; commands
//! also need a user (not a service ID), and their effect needs the
//! administrators' signatures, which the ceremony service checks.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keyhold_core::{Error, Reason};
use serde_json::json;

use super::audit;
use super::ctx::RawBody;
use super::{reply, run, ApiResult, AppState, Body};
use crate::auth::{Principal, PrincipalKind};
use crate::ceremony::{Ceremony, Outcome, Submission};

fn principal(st: &AppState, headers: &HeaderMap) -> Result<Principal, Error> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(Error::unauthorized)?;
    st.0.tokens.authenticate(token)
}

fn ceremony(st: &AppState, p: &Principal) -> Result<Option<Arc<Ceremony>>, Error> {
    match st.0.ceremony.get() {
        Some(c) if c.account_id() != p.account_id => Err(Error::unauthorized()),
        Some(c) => Ok(Some(c.clone())),
        None => Ok(None),
    }
}

/// Runs ceremony work (store reads, argon-free crypto) on the blocking pool.
async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let work = crate::request_id::carry(f);
    match tokio::time::timeout(st.0.store_timeout, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "ceremony task failed");
            Err(Error::internal())
        }
        Err(_) => Err(Error::unavailable(
            "The key store did not answer in time; retry later",
        )),
    }
}

/// The caller, noted in the request's audit slot.
fn audited_principal(st: &AppState, headers: &HeaderMap) -> Result<Principal, Error> {
    let p = principal(st, headers)?;
    audit::note(|slot| slot.principal(&p));
    Ok(p)
}

pub(crate) async fn status(State(st): State<AppState>, headers: HeaderMap) -> Response {
    run("Ceremony status could not be read", async {
        let p = audited_principal(&st, &headers)?;
        let value = match ceremony(&st, &p)? {
            Some(c) => blocking(&st, move || c.status()).await?,
            None => json!({"master_key_source": "file", "sealed": false}),
        };
        Ok(reply(&st, StatusCode::OK, Body::Json, &value))
    })
    .await
}

pub(crate) async fn command(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    run("Ceremony command could not be run", async {
        let p = audited_principal(&st, &headers)?;
        if p.kind != PrincipalKind::User {
            return Err(Error::new(
                Reason::Unauthorized,
                "Ceremony commands are submitted by users, not service IDs",
            )
            .into());
        }
        let Some(c) = ceremony(&st, &p)? else {
            return Err(Error::new(
                Reason::CeremonyDisabled,
                "This server's master key comes from a file (--master-key file); start it with --master-key ceremony to use the key ceremony",
            )
            .into());
        };
        let sub: Submission = serde_json::from_slice(&body).map_err(|_| {
            Error::bad_body("The body must be {\"command\": {...}, \"admin\": NAME, \"signature\": BASE64}")
        })?;
        audit::note(|slot| slot.action(format!("ceremony.command.{}", sub.command.verb.as_str())));
        let outcome = blocking(&st, move || c.submit(sub)).await?;
        let status = match outcome {
            Outcome::Pending(_) => StatusCode::ACCEPTED,
            _ => StatusCode::OK,
        };
        let r: ApiResult = Ok(reply(&st, status, Body::Json, &outcome.to_json()));
        r
    })
    .await
}
