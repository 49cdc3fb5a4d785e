//! Key resource routes: create, list, count, get, metadata, patch, delete,
//! restore, purge, versions.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use keyhold_core::access::Permission;
use keyhold_core::list::{self, ListKeys};
use keyhold_core::timefmt;
use keyhold_core::{Error, Reason, Result};
use serde::Deserialize;
use serde_json::Value;

use super::body::{self, base64_field};
use super::body::{DualAuthIn, RotationIn};
use super::ctx::{Ctx, PathArgs, RawBody};
use super::error::OpContext;
use super::render::{self, KEY_TYPE};
use super::{blocking, no_content, reply, run, wants_representation, AppState, Body};
use crate::service::{CreateKey, ImportMaterial, PolicyOverrides};

/// Decoded query pairs; a malformed query string is the caller's error.
pub(crate) fn query_pairs(raw: &Option<String>) -> Result<Vec<(String, String)>> {
    match raw {
        None => Ok(vec![]),
        Some(q) if q.to_ascii_lowercase().contains("%00") => Err(Error::new(
            keyhold_core::Reason::InvalidQueryParam,
            "The query string holds a NUL character",
        )),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q).map_err(|_| {
            Error::new(
                keyhold_core::Reason::InvalidQueryParam,
                "The query string is malformed",
            )
        }),
    }
}

pub(crate) fn query_flag(pairs: &[(String, String)], name: &str) -> Result<bool> {
    match pairs.iter().find(|(k, _)| k == name) {
        None => Ok(false),
        Some((_, v)) if v.is_empty() => Ok(false),
        Some((_, v)) => list::parse_bool(name, v),
    }
}

pub(crate) fn key_ring_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-kms-key-ring")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// One key resource of a create body; names are lower-cased by [`body::parse`].
#[derive(Deserialize)]
struct KeyIn {
    name: Option<String>,
    description: Option<String>,
    tags: Option<Vec<String>>,
    aliases: Option<Vec<String>>,
    extractable: Option<bool>,
    expirationdate: Option<String>,
    payload: Option<String>,
    encryptednonce: Option<String>,
    iv: Option<String>,
    encryptionalgorithm: Option<String>,
    rotation: Option<RotationIn>,
    dualauthdelete: Option<DualAuthIn>,
}

pub(crate) fn import_material(
    payload: Option<String>,
    nonce: Option<String>,
    iv: Option<String>,
    algorithm: Option<String>,
) -> Result<Option<ImportMaterial>> {
    let Some(payload) = payload else {
        if nonce.is_some() || iv.is_some() {
            return Err(Error::field(
                keyhold_core::Reason::KeyPayloadReq,
                "payload",
                "A secure import needs the encrypted key material in `payload`",
            ));
        }
        return Ok(None);
    };
    let payload = base64_field("payload", &payload, "base64 encoded key material")?;
    let encrypted_nonce = nonce
        .map(|n| {
            base64_field("encryptedNonce", &n, "the base64 encoded encrypted nonce")
                .map(|z| z.to_vec())
        })
        .transpose()?;
    let iv = iv
        .map(|v| {
            base64_field("iv", &v, "the base64 encoded initialization vector").map(|z| z.to_vec())
        })
        .transpose()?;
    Ok(Some(ImportMaterial {
        payload,
        encrypted_nonce,
        iv,
        algorithm,
    }))
}

fn parse_create(
    bytes: &axum::body::Bytes,
    key_ring: Option<String>,
    with_overrides: bool,
) -> Result<CreateKey> {
    let resources = body::resources(body::parse(bytes)?)?;
    if resources.len() != 1 {
        return Err(Error::new(
            keyhold_core::Reason::NumCollectionResource,
            "Exactly one key can be created per request",
        ));
    }
    let mut resources = resources;
    let k: KeyIn = body::typed(resources.remove(0))?;
    let name = k
        .name
        .ok_or_else(|| Error::invalid_field("name", "a string of 2 to 90 characters"))?;
    let expiration = k
        .expirationdate
        .filter(|e| !e.is_empty())
        .map(|e| {
            timefmt::parse(&e)
                .ok_or_else(|| Error::invalid_field("expirationDate", "a date in RFC 3339 format"))
        })
        .transpose()?;
    let overrides = if with_overrides {
        Some(PolicyOverrides {
            rotation: k
                .rotation
                .map(|r| (r.enabled.unwrap_or(true), r.interval_month)),
            dual_auth: k.dualauthdelete.map(|d| d.enabled.unwrap_or(false)),
        })
    } else {
        None
    };
    Ok(CreateKey {
        name,
        description: k.description,
        tags: k.tags.unwrap_or_default(),
        aliases: k.aliases.unwrap_or_default(),
        extractable: k.extractable.unwrap_or(false),
        expiration,
        material: import_material(k.payload, k.encryptednonce, k.iv, k.encryptionalgorithm)?,
        key_ring,
        overrides,
    })
}

pub(crate) fn key_envelope(
    st: &AppState,
    ctx: &Ctx,
    keys: &[(keyhold_core::model::KeyRecord, Option<&[u8]>)],
) -> Value {
    let now = timefmt::now();
    let rules = st.0.svc.rules;
    let resources = keys
        .iter()
        .map(|(k, p)| render::key(k, &ctx.instance, &rules, now, *p))
        .collect();
    render::collection(KEY_TYPE, resources, None)
}

async fn create_inner(
    st: AppState,
    ctx: Ctx,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
    with_overrides: bool,
) -> super::ApiResult {
    let ring = key_ring_header(&headers);
    ctx.require_ring(&st, Permission::CreateKey, ring.as_deref())?;
    let request = parse_create(&bytes, ring, with_overrides)?;
    let instance_id = ctx.instance.id.clone();
    let principal = ctx.principal.clone();
    let (key, payload) = blocking(&st, move |svc| {
        svc.create_key(&instance_id, &principal, request)
    })
    .await?;
    if let Some(slot) = &ctx.audit {
        // The new key's id is known only now; the audit event names it.
        slot.key_id(&key.id);
        slot.key_version(key.current_version.id.clone());
    }
    let body = key_envelope(&st, &ctx, &[(key, payload.as_ref().map(|p| p.as_slice()))]);
    Ok(reply(&st, StatusCode::CREATED, Body::KeyVendor, &body))
}

pub async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Response {
    run(
        "Key could not be created",
        create_inner(st, ctx, headers, bytes, false),
    )
    .await
}

pub async fn create_with_overrides(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Response {
    run(
        "Key could not be created",
        create_inner(st, ctx, headers, bytes, true),
    )
    .await
}

fn list_query(raw: &Option<String>, headers: &HeaderMap) -> Result<ListKeys> {
    let pairs = query_pairs(raw)?;
    ListKeys::from_query(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        key_ring_header(headers),
    )
}

pub async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    run("Keys could not be listed", async move {
        ctx.require_ring(
            &st,
            Permission::ListKeys,
            key_ring_header(&headers).as_deref(),
        )?;
        let query = list_query(&q, &headers)?;
        let instance_id = ctx.instance.id.clone();
        let keys = blocking(&st, move |svc| svc.list_keys(&instance_id, &query)).await?;
        let pairs: Vec<_> = keys.into_iter().map(|k| (k, None)).collect();
        Ok(reply(
            &st,
            StatusCode::OK,
            Body::Json,
            &key_envelope(&st, &ctx, &pairs),
        ))
    })
    .await
}

pub async fn count(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    run("Keys could not be counted", async move {
        ctx.require_ring(
            &st,
            Permission::ListKeys,
            key_ring_header(&headers).as_deref(),
        )?;
        let query = list_query(&q, &headers)?;
        let instance_id = ctx.instance.id.clone();
        let n = blocking(&st, move |svc| svc.count_keys(&instance_id, &query)).await?;
        let mut resp = axum::response::IntoResponse::into_response(StatusCode::OK);
        if let Ok(v) = axum::http::HeaderValue::from_str(&n.to_string()) {
            resp.headers_mut().insert("key-total", v);
        }
        Ok(resp)
    })
    .await
}

async fn get_inner(st: AppState, ctx: Ctx, id: String, with_payload: bool) -> super::ApiResult {
    ctx.require_key(&st, Permission::ReadKeyMetadata, &id)
        .await?;
    // A standard key's payload is for ReaderPlus and up; a Reader may not read the key at all.
    let may_read_payload = ctx
        .require_key(&st, Permission::ReadKeyPayload, &id)
        .await
        .is_ok();
    let instance_id = ctx.instance.id.clone();
    let (key, payload) = blocking(&st, move |svc| {
        svc.get_key(&instance_id, &id, with_payload && may_read_payload)
    })
    .await?;
    if with_payload && key.extractable && !may_read_payload {
        return Err(Error::new(
            Reason::Unauthorized,
            "The caller's roles do not allow this action",
        )
        .into());
    }
    let body = key_envelope(&st, &ctx, &[(key, payload.as_ref().map(|p| p.as_slice()))]);
    Ok(reply(&st, StatusCode::OK, Body::Json, &body))
}

pub async fn get(State(st): State<AppState>, ctx: Ctx, PathArgs(id): PathArgs<String>) -> Response {
    run("Key could not be retrieved", get_inner(st, ctx, id, true)).await
}

pub async fn metadata(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(id): PathArgs<String>,
) -> Response {
    run(
        "Key metadata could not be retrieved",
        get_inner(st, ctx, id, false),
    )
    .await
}

pub async fn patch(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    PathArgs(id): PathArgs<String>,
    RawBody(bytes): RawBody,
) -> Response {
    run("Key could not be updated", async move {
        ctx.require_key(&st, Permission::DeleteRestorePatch, &id)
            .await?;
        #[derive(Deserialize)]
        struct PatchIn {
            keyringid: Option<String>,
        }
        let parsed = body::parse(&bytes)?.ok_or_else(|| {
            Error::new(
                keyhold_core::Reason::NoBody,
                "The request needs a body with `keyRingID`",
            )
        })?;
        let p: PatchIn = body::typed(parsed)?;
        let ring = p
            .keyringid
            .filter(|r| !r.is_empty())
            .ok_or_else(|| Error::invalid_field("keyRingID", "the id of an existing key ring"))?;
        let current = key_ring_header(&headers);
        let instance_id = ctx.instance.id.clone();
        let key = blocking(&st, move |svc| {
            svc.move_key(&instance_id, &id, current.as_deref(), &ring)
        })
        .await?;
        Ok(reply(
            &st,
            StatusCode::OK,
            Body::Json,
            &key_envelope(&st, &ctx, &[(key, None)]),
        ))
    })
    .await
}

pub async fn delete(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    PathArgs(id): PathArgs<String>,
    RawQuery(q): RawQuery,
) -> Response {
    run("Key could not be deleted", async move {
        ctx.require_key(&st, Permission::DeleteRestorePatch, &id)
            .await?;
        let pairs = query_pairs(&q)?;
        let force = query_flag(&pairs, "force")?;
        let instance_id = ctx.instance.id.clone();
        let principal = ctx.principal.clone();
        let key = blocking(&st, move |svc| {
            svc.delete_key(&instance_id, &id, &principal, force)
        })
        .await?;
        if wants_representation(&headers) {
            Ok(reply(
                &st,
                StatusCode::OK,
                Body::Json,
                &key_envelope(&st, &ctx, &[(key, None)]),
            ))
        } else {
            Ok(no_content())
        }
    })
    .await
}

/// Restores a deleted key. Legacy clients may send the imported material again;
/// it is not needed, but whatever is sent must be well-formed.
pub(crate) async fn restore_inner(
    st: AppState,
    ctx: Ctx,
    id: String,
    bytes: axum::body::Bytes,
) -> super::ApiResult {
    ctx.require_key(&st, Permission::DeleteRestorePatch, &id)
        .await?;
    if let Some(v) = body::parse(&bytes)? {
        let m: body::MaterialIn = body::typed(v)?;
        import_material(m.payload, m.encryptednonce, m.iv, m.encryptionalgorithm)?;
    }
    let instance_id = ctx.instance.id.clone();
    let key = blocking(&st, move |svc| svc.restore_key(&instance_id, &id))
        .await
        .op("Key could not be restored")?;
    Ok(reply(
        &st,
        StatusCode::CREATED,
        Body::KeyVendor,
        &key_envelope(&st, &ctx, &[(key, None)]),
    ))
}

pub async fn restore(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(id): PathArgs<String>,
    RawBody(bytes): RawBody,
) -> Response {
    run(
        "Key could not be restored",
        restore_inner(st, ctx, id, bytes),
    )
    .await
}

pub async fn purge(
    State(st): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    PathArgs(id): PathArgs<String>,
) -> Response {
    run("Key could not be purged", async move {
        ctx.require_key(&st, Permission::Purge, &id).await?;
        let instance_id = ctx.instance.id.clone();
        let key = blocking(&st, move |svc| svc.purge_key(&instance_id, &id)).await?;
        if wants_representation(&headers) {
            Ok(reply(
                &st,
                StatusCode::OK,
                Body::Json,
                &key_envelope(&st, &ctx, &[(key, None)]),
            ))
        } else {
            Ok(no_content())
        }
    })
    .await
}

pub async fn versions(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(id): PathArgs<String>,
    RawQuery(q): RawQuery,
) -> Response {
    run("Key versions could not be retrieved", async move {
        ctx.require_key(&st, Permission::ReadKeyMetadata, &id)
            .await?;
        let pairs = query_pairs(&q)?;
        let mut limit = 200u32;
        let mut offset = 0u64;
        for (k, v) in &pairs {
            match k.as_str() {
                "limit" => limit = list::parse_limit(v, 5000)?,
                "offset" => offset = list::parse_offset(v)?,
                _ => {}
            }
        }
        let total = query_flag(&pairs, "totalCount")?;
        let all = query_flag(&pairs, "allKeyStates")?;
        let instance_id = ctx.instance.id.clone();
        let versions = blocking(&st, move |svc| svc.key_versions(&instance_id, &id, all)).await?;
        let count = versions.len() as u64;
        let page: Vec<Value> = versions
            .iter()
            .skip(offset.min(usize::MAX as u64) as usize)
            .take(limit as usize)
            .map(render::version)
            .collect();
        let body = render::collection(
            "application/vnd.ibm.kms.key.version+json",
            page,
            total.then_some(count),
        );
        Ok(reply(&st, StatusCode::OK, Body::Json, &body))
    })
    .await
}
