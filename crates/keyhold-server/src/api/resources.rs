//! Registrations, aliases, key rings and import tokens.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyhold_core::list;
use keyhold_core::timefmt;
use keyhold_core::{Error, Reason, Result};
use keyhold_store::RegistrationQuery;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body;
use super::ctx::{Ctx, PathArgs, RawBody};
use super::keys::{query_flag, query_pairs};
use super::render;
use super::{blocking, blocking_within, no_content, reply, run, AppState, Body};
use crate::auth::require_service;
use crate::service::RegistrationInput;
use keyhold_core::access::Permission;

const REGISTRATION_TYPE: &str = "application/vnd.ibm.kms.registration+json";

fn page_params(pairs: &[(String, String)], default_limit: u32, max: u32) -> Result<(u32, u64)> {
    let mut limit = default_limit;
    let mut offset = 0;
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => limit = list::parse_limit(v, max)?,
            "offset" => offset = list::parse_offset(v)?,
            _ => {}
        }
    }
    Ok((limit, offset))
}

/// Decodes `%XX` escapes; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.contains('\0'))
}

fn registration_query(q: &Option<String>, all_keys: bool) -> Result<(RegistrationQuery, bool)> {
    let pairs = query_pairs(q)?;
    let (limit, offset) = page_params(&pairs, 200, 5000)?;
    let mut query = RegistrationQuery {
        limit,
        offset,
        ..Default::default()
    };
    for (k, v) in &pairs {
        match k.as_str() {
            "urlEncodedResourceCRNQuery" if !v.is_empty() => {
                // Clients may encode the CRN themselves before the query is encoded.
                let decoded;
                let v = if v.contains('%') {
                    decoded = percent_decode(v).ok_or_else(|| {
                        Error::invalid_query(
                            "urlEncodedResourceCRNQuery",
                            "a (URL-encoded) CRN, optionally with * wildcards",
                        )
                    })?;
                    &decoded
                } else {
                    v
                };
                if all_keys {
                    keyhold_core::validate::crn_query_all_keys(v)?;
                } else if !v.starts_with("crn:") || v.len() > 1024 {
                    return Err(Error::invalid_query(
                        "urlEncodedResourceCRNQuery",
                        "a CRN, optionally with * wildcards",
                    ));
                }
                query.crn_pattern = Some(v.to_string());
            }
            "preventKeyDeletion" if !v.is_empty() => {
                query.prevent_key_deletion = Some(list::parse_bool("preventKeyDeletion", v)?)
            }
            _ => {}
        }
    }
    Ok((query, query_flag(&pairs, "totalCount")?))
}

async fn list_registrations(
    st: AppState,
    ctx: Ctx,
    key: Option<String>,
    q: Option<String>,
) -> super::ApiResult {
    match &key {
        Some(id) => ctx.require_key(&st, Permission::Registrations, id).await?,
        None => ctx.require(Permission::Registrations)?,
    }
    let (query, with_total) = registration_query(&q, key.is_none())?;
    let instance_id = ctx.instance.id.clone();
    let (regs, total, names) = blocking(&st, move |svc| {
        let (regs, total) = svc.list_registrations(&instance_id, key.as_deref(), query)?;
        let names: Vec<Option<String>> = regs
            .iter()
            .map(|r| {
                svc.store()
                    .get_key(&instance_id, &r.key_id)
                    .ok()
                    .flatten()
                    .map(|k| k.name)
            })
            .collect();
        Ok((regs, total, names))
    })
    .await?;
    let resources: Vec<Value> = regs
        .iter()
        .zip(names.iter())
        .map(|(r, n)| render::registration(r, n.as_deref(), false))
        .collect();
    Ok(reply(
        &st,
        StatusCode::OK,
        Body::Json,
        &render::collection(REGISTRATION_TYPE, resources, with_total.then_some(total)),
    ))
}

pub async fn list_key_registrations(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(id): PathArgs<String>,
    RawQuery(q): RawQuery,
) -> Response {
    run(
        "Registrations could not be retrieved",
        list_registrations(st, ctx, Some(id), q),
    )
    .await
}

pub async fn list_all_registrations(
    State(st): State<AppState>,
    ctx: Ctx,
    RawQuery(q): RawQuery,
) -> Response {
    run(
        "Registrations could not be retrieved",
        list_registrations(st, ctx, None, q),
    )
    .await
}

#[derive(Deserialize)]
struct RegistrationIn {
    preventkeydeletion: Option<bool>,
    description: Option<String>,
    registrationmetadata: Option<String>,
    keyversionid: Option<String>,
}

fn registration_input(bytes: &axum::body::Bytes, all_required: bool) -> Result<RegistrationInput> {
    let input = match body::parse(bytes)? {
        None if !all_required => RegistrationInput::default(),
        parsed => {
            let mut resources = body::resources(parsed)?;
            if resources.len() != 1 {
                return Err(Error::new(
                    Reason::NumCollectionResource,
                    "Exactly one registration resource is allowed",
                ));
            }
            let r: RegistrationIn = body::typed(resources.remove(0))?;
            if all_required
                && (r.preventkeydeletion.is_none()
                    || r.description.is_none()
                    || r.registrationmetadata.is_none())
            {
                return Err(Error::bad_body("A registration replacement needs preventKeyDeletion, description and registrationMetadata"));
            }
            if r.description
                .as_ref()
                .is_some_and(|d| d.chars().count() > 240)
            {
                return Err(Error::invalid_field(
                    "description",
                    "a string of at most 240 characters",
                ));
            }
            if r.registrationmetadata
                .as_ref()
                .is_some_and(|d| d.len() > 4096)
            {
                return Err(Error::invalid_field(
                    "registrationMetadata",
                    "a string of at most 4096 characters",
                ));
            }
            RegistrationInput {
                prevent_key_deletion: r.preventkeydeletion,
                description: r.description,
                registration_metadata: r.registrationmetadata,
                key_version_id: r.keyversionid,
            }
        }
    };
    Ok(input)
}

#[derive(Clone, Copy)]
enum RegistrationWrite {
    Create,
    Update,
    Replace,
}

async fn write_registration(
    st: AppState,
    ctx: Ctx,
    id: String,
    crn: String,
    bytes: axum::body::Bytes,
    mode: RegistrationWrite,
) -> super::ApiResult {
    ctx.require_key(&st, Permission::Registrations, &id).await?;
    require_service(&ctx.principal)?;
    let input = registration_input(&bytes, matches!(mode, RegistrationWrite::Replace))?;
    let instance_id = ctx.instance.id.clone();
    let principal = ctx.principal.clone();
    let reg = blocking(&st, move |svc| match mode {
        RegistrationWrite::Create => {
            svc.create_registration(&instance_id, &id, &crn, &principal, input)
        }
        RegistrationWrite::Update => {
            svc.write_registration(&instance_id, &id, &crn, &principal, input, false)
        }
        RegistrationWrite::Replace => {
            svc.write_registration(&instance_id, &id, &crn, &principal, input, true)
        }
    })
    .await?;
    let status = if matches!(mode, RegistrationWrite::Create) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = render::collection(
        REGISTRATION_TYPE,
        vec![render::registration(&reg, None, true)],
        None,
    );
    Ok(reply(&st, status, Body::Json, &body))
}

pub async fn create_registration(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs((id, crn)): PathArgs<(String, String)>,
    RawBody(bytes): RawBody,
) -> Response {
    run(
        "Registration could not be created",
        write_registration(st, ctx, id, crn, bytes, RegistrationWrite::Create),
    )
    .await
}

pub async fn update_registration(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs((id, crn)): PathArgs<(String, String)>,
    RawBody(bytes): RawBody,
) -> Response {
    run(
        "Registration could not be updated",
        write_registration(st, ctx, id, crn, bytes, RegistrationWrite::Update),
    )
    .await
}

pub async fn replace_registration(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs((id, crn)): PathArgs<(String, String)>,
    RawBody(bytes): RawBody,
) -> Response {
    run(
        "Registration could not be replaced",
        write_registration(st, ctx, id, crn, bytes, RegistrationWrite::Replace),
    )
    .await
}

pub async fn delete_registration(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs((id, crn)): PathArgs<(String, String)>,
) -> Response {
    run("Registration could not be deleted", async move {
        ctx.require_key(&st, Permission::Registrations, &id).await?;
        require_service(&ctx.principal)?;
        let instance_id = ctx.instance.id.clone();
        blocking(&st, move |svc| {
            svc.delete_registration(&instance_id, &id, &crn)
        })
        .await?;
        Ok(no_content())
    })
    .await
}

/// `POST /keys/{id}/registrations?action=deactivate`: the listed resources stop using the key.
pub async fn registration_action(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(id): PathArgs<String>,
    RawQuery(q): RawQuery,
    RawBody(bytes): RawBody,
) -> Response {
    run("Registrations could not be deactivated", async move {
        ctx.require_key(&st, Permission::Registrations, &id).await?;
        require_service(&ctx.principal)?;
        let pairs = query_pairs(&q)?;
        if pairs
            .iter()
            .find(|(k, _)| k == "action")
            .map(|(_, v)| v.as_str())
            != Some("deactivate")
        {
            return Err(Error::invalid_query("action", "deactivate").into());
        }
        #[derive(Deserialize)]
        struct CrnIn {
            resourcecrn: String,
        }
        let mut crns = Vec::new();
        for r in body::resources(body::parse(&bytes)?)? {
            let c: CrnIn = body::typed(r)?;
            keyhold_core::validate::crn(&c.resourcecrn)?;
            crns.push(c.resourcecrn);
        }
        let instance_id = ctx.instance.id.clone();
        blocking(&st, move |svc| {
            for crn in &crns {
                svc.delete_registration(&instance_id, &id, crn)?;
            }
            Ok(())
        })
        .await?;
        Ok(no_content())
    })
    .await
}

pub async fn create_alias(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs((id, alias)): PathArgs<(String, String)>,
) -> Response {
    run("Key alias could not be created", async move {
        ctx.require_key(&st, Permission::Aliases, &id).await?;
        let instance_id = ctx.instance.id.clone();
        let alias_name = alias.clone();
        let key = blocking(&st, move |svc| svc.add_alias(&instance_id, &id, &alias_name)).await?;
        let body = render::collection(
            "application/vnd.ibm.kms.alias+json",
            vec![json!({"keyId": key.id, "alias": alias, "createdBy": ctx.principal.id, "creationDate": timefmt::format(key.updated_at)})],
            None,
        );
        Ok(reply(&st, StatusCode::CREATED, Body::Json, &body))
    })
    .await
}

pub async fn delete_alias(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs((id, alias)): PathArgs<(String, String)>,
) -> Response {
    run("Key alias could not be deleted", async move {
        ctx.require_key(&st, Permission::Aliases, &id).await?;
        let instance_id = ctx.instance.id.clone();
        blocking(&st, move |svc| svc.remove_alias(&instance_id, &id, &alias)).await?;
        Ok(no_content())
    })
    .await
}

pub async fn create_ring(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(ring): PathArgs<String>,
    RawBody(_bytes): RawBody,
) -> Response {
    run("Key ring could not be created", async move {
        ctx.require(Permission::CreateKeyRing)?;
        let instance_id = ctx.instance.id.clone();
        let principal = ctx.principal.clone();
        blocking(&st, move |svc| {
            svc.create_ring(&instance_id, &ring, &principal)
        })
        .await?;
        Ok(StatusCode::CREATED.into_response())
    })
    .await
}

pub async fn list_rings(State(st): State<AppState>, ctx: Ctx, RawQuery(q): RawQuery) -> Response {
    run("Key rings could not be listed", async move {
        ctx.require(Permission::ListKeyRings)?;
        let pairs = query_pairs(&q)?;
        let (limit, offset) = page_params(&pairs, 100, 5000)?;
        let total = query_flag(&pairs, "totalCount")?;
        let instance_id = ctx.instance.id.clone();
        let rings = blocking(&st, move |svc| svc.list_rings(&instance_id)).await?;
        let count = rings.len() as u64;
        let page = rings
            .iter()
            .skip(offset.min(usize::MAX as u64) as usize)
            .take(limit as usize)
            .map(render::ring)
            .collect();
        Ok(reply(
            &st,
            StatusCode::OK,
            Body::Json,
            &render::collection(
                "application/vnd.ibm.kms.key_ring+json",
                page,
                total.then_some(count),
            ),
        ))
    })
    .await
}

pub async fn delete_ring(
    State(st): State<AppState>,
    ctx: Ctx,
    PathArgs(ring): PathArgs<String>,
    RawQuery(q): RawQuery,
) -> Response {
    run("Key ring could not be deleted", async move {
        ctx.require(Permission::DeleteKeyRing)?;
        let force = query_flag(&query_pairs(&q)?, "force")?;
        let instance_id = ctx.instance.id.clone();
        blocking(&st, move |svc| svc.delete_ring(&instance_id, &ring, force)).await?;
        Ok(no_content())
    })
    .await
}

pub async fn create_import_token(
    State(st): State<AppState>,
    ctx: Ctx,
    RawBody(bytes): RawBody,
) -> Response {
    run("Import token could not be created", async move {
        ctx.require(Permission::ImportToken)?;
        #[derive(Deserialize, Default)]
        struct TokenIn {
            expiration: Option<i64>,
            maxallowedretrievals: Option<i64>,
        }
        let t: TokenIn = match body::parse(&bytes)? {
            None => TokenIn::default(),
            Some(v) => body::typed(v)?,
        };
        let instance_id = ctx.instance.id.clone();
        let token = blocking_within(&st, st.0.request_timeout, move |svc| {
            svc.create_import_token(&instance_id, t.expiration, t.maxallowedretrievals)
        })
        .await?;
        Ok(reply(
            &st,
            StatusCode::OK,
            Body::Json,
            &render::import_token(&token, false),
        ))
    })
    .await
}

pub async fn get_import_token(State(st): State<AppState>, ctx: Ctx) -> Response {
    run("Import token could not be retrieved", async move {
        ctx.require(Permission::ImportToken)?;
        let instance_id = ctx.instance.id.clone();
        let token = blocking(&st, move |svc| svc.retrieve_import_token(&instance_id)).await?;
        Ok(reply(
            &st,
            StatusCode::OK,
            Body::Json,
            &render::import_token(&token, true),
        ))
    })
    .await
}
