//! Request extractors: the authenticated caller and instance (`Ctx`), and the
//! size-limited raw body (`RawBody`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use keyhold_core::access::{Permission, Roles};
use keyhold_core::model::Instance;
use keyhold_core::{Error, Reason};

use super::error::ApiError;
use super::{blocking, AppState, Network};
use crate::auth::Principal;
use crate::service::cidr_contains;

/// The caller and the instance the request is scoped to, authorized.
pub struct Ctx {
    pub principal: Principal,
    pub instance: Arc<Instance>,
    /// The caller's service roles on the instance.
    pub roles: Roles,
    /// Where the handler adds what the audit event should know (key version).
    pub audit: Option<super::audit::AuditSlot>,
}

fn not_allowed() -> Error {
    Error::new(
        Reason::Unauthorized,
        "The caller's roles do not allow this action",
    )
}

impl Ctx {
    /// Refuses the request unless the caller's instance-wide roles grant `p`.
    pub fn require(&self, p: Permission) -> Result<(), Error> {
        if p.allowed(self.roles) {
            Ok(())
        } else {
            Err(not_allowed())
        }
    }

    /// Refuses the request unless the caller may do `p` on the key `id_or_alias`:
    /// instance-wide roles first (no lookup), else roles granted on the key's ring
    /// or on the key itself. A key the caller may not touch is not revealed either.
    pub async fn require_key(
        &self,
        st: &AppState,
        p: Permission,
        id_or_alias: &str,
    ) -> Result<(), Error> {
        if p.allowed(self.roles) {
            return Ok(());
        }
        let instance_id = self.instance.id.clone();
        let (ring, key_id) = match st.0.svc.cached_view(&instance_id, id_or_alias) {
            Some(v) => (v.record.key_ring.clone(), v.record.id.clone()),
            None => {
                let id = id_or_alias.to_string();
                let found = blocking(st, move |svc| {
                    svc.get_key(&instance_id, &id, false)
                        .map(|(k, _)| (k.key_ring, k.id))
                })
                .await;
                match found {
                    Ok(found) => found,
                    Err(e) if e.reason == Reason::Unavailable => return Err(e),
                    Err(_) => return Err(not_allowed()),
                }
            }
        };
        let roles =
            st.0.authz
                .key_roles(&self.principal, &self.instance, &ring, Some(&key_id))?;
        if p.allowed(roles) {
            Ok(())
        } else {
            Err(not_allowed())
        }
    }

    /// [`Ctx::require`], or roles granted on key ring `ring` (creating or listing
    /// keys with an `X-Kms-Key-Ring` header).
    pub fn require_ring(
        &self,
        st: &AppState,
        p: Permission,
        ring: Option<&str>,
    ) -> Result<(), Error> {
        if p.allowed(self.roles) {
            return Ok(());
        }
        let Some(ring) = ring else {
            return Err(not_allowed());
        };
        let roles =
            st.0.authz
                .key_roles(&self.principal, &self.instance, ring, None)?;
        if p.allowed(roles) {
            Ok(())
        } else {
            Err(not_allowed())
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(Error::unauthorized)?;
        let principal = st.0.tokens.authenticate(token)?;
        let slot = super::audit::current();
        if let Some(slot) = &slot {
            slot.principal(&principal);
        }
        let instance_id = parts
            .headers
            .get("bluemix-instance")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Error::new(
                    Reason::InvalidHeader,
                    "The Bluemix-Instance header is required",
                )
            })?;
        if instance_id.len() > 128
            || !instance_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::new(
                Reason::InvalidHeader,
                "The Bluemix-Instance header must be an instance id",
            )
            .into());
        }
        let dir = st.directory().await?;
        let instance = dir
            .instance(instance_id)
            .filter(|i| i.is_usable_kms())
            .cloned()
            .ok_or_else(Error::unauthorized)?;
        if let Some(slot) = &slot {
            slot.instance(&instance.id);
        }
        if principal.account_id != instance.account_id {
            return Err(Error::unauthorized().into());
        }
        // Load the account's access on the blocking pool when this node has not
        // cached it, so the authorizer below answers from memory.
        if st
            .0
            .svc
            .cached_account_access(&principal.account_id)
            .is_none()
        {
            let account = principal.account_id.clone();
            blocking(st, move |svc| svc.account_access(&account).map(|_| ())).await?;
        }
        let roles = st.0.authz.roles(&principal, &instance)?;
        if !dir.crypto_authorized(&instance) {
            let crypto = instance.crypto_instance.as_deref().unwrap_or_default();
            return Err(Error::new(
                Reason::CryptoInstanceAuthorization,
                format!("The key-management instance {} is bound to the crypto instance {crypto} but has no authorization to use it: an administrator must authorize kms (this instance) → hs-crypto ({crypto}) with the Reader role (POST /v1/authorizations)", instance.id),
            )
            .into());
        }
        let policies = st.instance_policies(&instance.id).await?;
        if policies.private_only
            && parts
                .extensions
                .get::<Network>()
                .copied()
                .unwrap_or(Network::Public)
                != Network::Private
        {
            return Err(Error::new(
                Reason::PrivateNetworkOnly,
                "The instance's allowedNetwork policy is private-only: call its private endpoint (see the connection info)",
            )
            .into());
        }
        if let Some(networks) = &policies.allowed_networks {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            if !peer.is_some_and(|ip| networks.iter().any(|n| cidr_contains(*n, ip))) {
                return Err(Error::new(Reason::Unauthorized, "The request comes from an address the instance's allowedIP policy does not admit").into());
            }
        }
        Ok(Ctx {
            principal,
            instance,
            roles,
            audit: slot,
        })
    }
}

/// The authenticated caller alone, for account-level endpoints (resource
/// controller, authorizations) that take no `Bluemix-Instance`.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(Error::unauthorized)?;
        let principal = st.0.tokens.authenticate(token)?;
        super::audit::note(|slot| slot.principal(&principal));
        Ok(Caller(principal))
    }
}

/// The request body, refused with 413 beyond the configured limit.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, ApiError> {
        let limit = st.0.body_limit;
        let too_large = || {
            Error::new(
                Reason::BodyTooLarge,
                format!("The request body is larger than {limit} bytes"),
            )
        };
        let declared = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large().into());
        }
        match axum::body::to_bytes(req.into_body(), limit).await {
            Ok(b) => Ok(RawBody(b)),
            Err(e) => {
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                let mut length_limit = false;
                while let Some(s) = source {
                    length_limit |= s.is::<http_body_util::LengthLimitError>();
                    source = s.source();
                }
                if length_limit {
                    Err(too_large().into())
                } else {
                    Err(Error::bad_body("The request body could not be read").into())
                }
            }
        }
    }
}

/// Path parameters, refused in the Key Protect error shape when they are not
/// valid (percent-decoded) UTF-8.
pub struct PathArgs<T>(pub T);

impl<T> FromRequestParts<AppState> for PathArgs<T>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        if parts.uri.path().to_ascii_lowercase().contains("%00") {
            return Err(Error::new(
                Reason::InvalidField,
                "The request path holds a NUL character",
            )
            .into());
        }
        match axum::extract::Path::<T>::from_request_parts(parts, st).await {
            Ok(axum::extract::Path(v)) => Ok(PathArgs(v)),
            Err(_) => Err(Error::new(
                Reason::InvalidField,
                "The request path holds an identifier that is not valid UTF-8",
            )
            .into()),
        }
    }
}
