//! Key actions in both forms: `POST /keys/{id}/actions/{action}` and the
//! older `POST /keys/{id}?action={action}` (keyprotect-api.md §5.1).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keyhold_core::access::Permission;
use keyhold_core::{Error, Reason, Result};
use serde::Deserialize;
use serde_json::json;

use super::body::{self, base64_field, encode, MaterialIn};
use super::ctx::{Ctx, PathArgs, RawBody};
use super::error::{ApiError, OpContext};
use super::keys::{import_material, key_envelope, query_pairs, restore_inner};
use super::{blocking, no_content, reply, run, wants_representation, AppState, Body};

#[derive(Deserialize, Default)]
struct CryptoIn {
    plaintext: Option<String>,
    ciphertext: Option<String>,
    aad: Option<Vec<String>>,
}

fn crypto_body(bytes: &Bytes, required: bool) -> Result<CryptoIn> {
    match body::parse(bytes)? {
        None if required => Err(Error::new(
            Reason::NoBody,
            "The request needs a body with `ciphertext`",
        )),
        None => Ok(CryptoIn::default()),
        Some(v) => body::typed(v),
    }
}

fn ciphertext_of(c: &CryptoIn) -> Result<String> {
    c.ciphertext
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Error::invalid_field(
                "ciphertext",
                "the original base64 encoded ciphertext from the wrap operation",
            )
        })
}

async fn dispatch(
    st: AppState,
    ctx: Ctx,
    headers: HeaderMap,
    id: String,
    action: &str,
    bytes: Bytes,
) -> Response {
    let instance_id = ctx.instance.id.clone();
    let slot = ctx.audit.clone();
    match action {
        "wrap" => {
            run("Key could not be wrapped", async move {
                ctx.require_key(&st, Permission::Wrap, &id).await?;
                let c = crypto_body(&bytes, false)?;
                let plaintext = c
                    .plaintext
                    .map(|p| base64_field("plaintext", &p, "a base64 encoded key material"))
                    .transpose()?;
                let aad = c.aad.unwrap_or_default();
                // A cached key is used right here; only a miss goes to the blocking pool.
                let out = match st.0.svc.cached_view(&instance_id, &id) {
                    Some(view) => st.0.svc.wrap_with(&view, plaintext, &aad)?,
                    None => blocking(&st, move |svc| svc.wrap(&instance_id, &id, plaintext, &aad)).await?,
                };
                let mut body = json!({"ciphertext": out.ciphertext, "keyVersion": {"id": out.version.id}});
                if let Some(p) = &out.plaintext {
                    body["plaintext"] = json!(encode(p));
                }
                if let Some(slot) = &slot {
                    slot.key_version(out.version.id);
                }
                Ok(reply(&st, StatusCode::OK, Body::KeyActionVendor, &body))
            })
            .await
        }
        "unwrap" => {
            run("Key could not be unwrapped", async move {
                ctx.require_key(&st, Permission::Wrap, &id).await?;
                let c = crypto_body(&bytes, true)?;
                let ciphertext = ciphertext_of(&c)?;
                let aad = c.aad.unwrap_or_default();
                let cached = match st.0.svc.cached_view(&instance_id, &id) {
                    Some(view) => st.0.svc.unwrap_with(&view, &ciphertext, &aad)?,
                    None => None,
                };
                let out = match cached {
                    Some(out) => out,
                    None => blocking(&st, move |svc| svc.unwrap(&instance_id, &id, &ciphertext, &aad)).await?,
                };
                let mut body = json!({"plaintext": encode(&out.plaintext), "keyVersion": {"id": out.version.id}});
                if let Some((ct, v)) = &out.rewrapped {
                    body["ciphertext"] = json!(ct);
                    body["rewrappedKeyVersion"] = json!({"id": v.id});
                }
                if let Some(slot) = &slot {
                    slot.key_version(out.version.id);
                }
                Ok(reply(&st, StatusCode::OK, Body::KeyActionVendor, &body))
            })
            .await
        }
        "rewrap" => {
            run("Key could not be rewrapped", async move {
                ctx.require_key(&st, Permission::Wrap, &id).await?;
                let c = crypto_body(&bytes, true)?;
                let ciphertext = ciphertext_of(&c)?;
                let aad = c.aad.unwrap_or_default();
                let (ct, old, new) = blocking(&st, move |svc| svc.rewrap(&instance_id, &id, &ciphertext, &aad)).await?;
                let body = json!({"ciphertext": ct,
                    "keyVersion": {"id": old.id, "creationDate": keyhold_core::timefmt::format(old.created_at)},
                    "rewrappedKeyVersion": {"id": new.id, "creationDate": keyhold_core::timefmt::format(new.created_at)}});
                Ok(reply(&st, StatusCode::OK, Body::KeyActionVendor, &body))
            })
            .await
        }
        "rotate" => {
            run("Key could not be rotated", async move {
                ctx.require_key(&st, Permission::Rotate, &id).await?;
                let r: MaterialIn = match body::parse(&bytes)? {
                    None => MaterialIn::default(),
                    Some(v) => body::typed(v)?,
                };
                let material = import_material(r.payload, r.encryptednonce, r.iv, r.encryptionalgorithm)?;
                let key = blocking(&st, move |svc| svc.rotate(&instance_id, &id, material)).await?;
                if wants_representation(&headers) {
                    Ok(reply(&st, StatusCode::OK, Body::Json, &key_envelope(&st, &ctx, &[(key, None)])))
                } else {
                    Ok(no_content())
                }
            })
            .await
        }
        "enable" | "disable" | "setKeyForDeletion" | "unsetKeyForDeletion" | "sync" => {
            let op = match action {
                "enable" => "Key could not be enabled",
                "disable" => "Key could not be disabled",
                "sync" => "Key could not be synced",
                _ => "Key could not be updated",
            };
            let action = action.to_string();
            run(op, async move {
                let p = match action.as_str() {
                    "enable" | "disable" => Permission::EnableDisable,
                    "sync" => Permission::Sync,
                    _ => Permission::AuthorizeDeletion,
                };
                ctx.require_key(&st, p, &id).await?;
                // These actions take no body; whatever was sent must still be JSON-ish.
                let _ = body::parse(&bytes)?;
                let principal = ctx.principal.clone();
                blocking(&st, move |svc| match action.as_str() {
                    "enable" => svc.enable(&instance_id, &id).map(|_| ()),
                    "disable" => svc.disable(&instance_id, &id).map(|_| ()),
                    "setKeyForDeletion" => svc.set_for_deletion(&instance_id, &id, &principal, true).map(|_| ()),
                    "unsetKeyForDeletion" => svc.set_for_deletion(&instance_id, &id, &principal, false).map(|_| ()),
                    _ => svc.sync(&instance_id, &id),
                })
                .await?;
                Ok(no_content())
            })
            .await
        }
        "restore" => run("Key could not be restored", restore_inner(st, ctx, id, bytes)).await,
        other => {
            let err = Error::invalid_query(
                "action",
                "one of wrap, unwrap, rewrap, rotate, enable, disable, restore, setKeyForDeletion, unsetKeyForDeletion, sync",
            );
            let _ = other;
            run("Key action could not be performed", async move { Err::<Response, ApiError>(err.into()) }).await
        }
    }
}

pub async fn path_action(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    PathArgs((id, action)): PathArgs<(String, String)>,
    RawBody(bytes): RawBody,
) -> Response {
    if action == "restore" {
        // Restore lives at /keys/{id}/restore, not under /actions.
        return run("Key action could not be performed", async {
            Err::<Response, ApiError>(Error::new(Reason::NotFound, "No such key action").into())
        })
        .await;
    }
    dispatch(st, ctx, headers, id, &action, bytes).await
}

pub async fn query_action(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    PathArgs(id): PathArgs<String>,
    RawQuery(q): RawQuery,
    RawBody(bytes): RawBody,
) -> Response {
    let action = match query_pairs(&q).op("Key action could not be performed") {
        Ok(pairs) => pairs
            .into_iter()
            .find(|(k, _)| k == "action")
            .map(|(_, v)| v),
        Err(e) => {
            return run("Key action could not be performed", async {
                Err::<Response, ApiError>(e)
            })
            .await
        }
    };
    let Some(action) = action.filter(|a| a != "sync") else {
        return run("Key action could not be performed", async {
            Err::<Response, ApiError>(Error::invalid_query("action", "one of wrap, unwrap, rewrap, rotate, enable, disable, restore, setKeyForDeletion, unsetKeyForDeletion").into())
        })
        .await;
    };
    dispatch(st, ctx, headers, id, &action, bytes).await
}
