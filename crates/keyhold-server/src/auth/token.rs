//! Access and refresh tokens: compact JWTs signed with Ed25519 (`alg: EdDSA`,
//! with a `kid`). The clients decode them to read `iat`/`exp`; only we verify.
//! Verified tokens are cached until they expire, so each signature is checked once.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keyhold_core::timefmt::{self, Timestamp};
use keyhold_core::{Error, Result};
use lru::LruCache;
use serde::{Deserialize, Serialize};

use super::{Principal, PrincipalKind};
use crate::metrics::{self, Cache};

const TOKEN_CACHE_ENTRIES: usize = 100_000;
pub const REFRESH_LIFETIME: i64 = 30 * 86400;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    sub_type: String,
    account: Account,
    iat: Timestamp,
    exp: Timestamp,
    jti: String,
    /// `access` or `refresh`.
    token_use: String,
    /// The API key the token was issued for (its id and hash fingerprint), so a
    /// refresh is refused once the key is deleted or rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    apikey: Option<KeyBinding>,
}

/// Which API key (id, fingerprint of its stored hash) a token descends from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBinding {
    pub id: String,
    pub fp: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Account {
    bss: String,
}

pub struct IssuedToken {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub expiration: Timestamp,
}

pub struct TokenService {
    key: Ed25519KeyPair,
    kid: String,
    lifetime: i64,
    verified: Mutex<LruCache<String, (Principal, Timestamp)>>,
    /// Signature checks made, so tests can prove each token is checked once.
    signature_checks: AtomicU64,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenService {
    /// `pkcs8` is the Ed25519 signing key document (kept wrapped at rest).
    pub fn new(pkcs8: &[u8], lifetime_secs: i64) -> Result<Self> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| Error::internal())?;
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref());
        let kid = b64(&digest.as_ref()[..12]);
        let cap = NonZeroUsize::new(TOKEN_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Ok(TokenService {
            key,
            kid,
            lifetime: lifetime_secs,
            verified: Mutex::new(LruCache::new(cap)),
            signature_checks: AtomicU64::new(0),
        })
    }

    pub fn generate_signing_key() -> Result<Vec<u8>> {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| Error::internal())?;
        Ok(doc.as_ref().to_vec())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    fn sign(&self, claims: &Claims) -> Result<String> {
        let header = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#, self.kid);
        let body = serde_json::to_vec(claims).map_err(|_| Error::internal())?;
        let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(&body));
        let sig = self.key.sign(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", b64(sig.as_ref())))
    }

    fn claims_for(
        principal: &Principal,
        now: Timestamp,
        life: i64,
        token_use: &str,
        apikey: Option<&KeyBinding>,
    ) -> Result<Claims> {
        let mut jti = [0u8; 12];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| Error::internal())?;
        Ok(Claims {
            iss: "keyhold".into(),
            sub: principal.id.clone(),
            sub_type: principal.kind.as_str().into(),
            account: Account {
                bss: principal.account_id.clone(),
            },
            iat: now,
            exp: now + life,
            jti: b64(&jti),
            token_use: token_use.into(),
            apikey: apikey.cloned(),
        })
    }

    pub fn issue(&self, principal: &Principal) -> Result<IssuedToken> {
        self.issue_bound(principal, None)
    }

    /// Issues tokens for an API key; the refresh token names it.
    pub fn issue_bound(
        &self,
        principal: &Principal,
        apikey: Option<&KeyBinding>,
    ) -> Result<IssuedToken> {
        let now = timefmt::now();
        let access = Self::claims_for(principal, now, self.lifetime, "access", apikey)?;
        let refresh = Self::claims_for(principal, now, REFRESH_LIFETIME, "refresh", apikey)?;
        Ok(IssuedToken {
            access_token: self.sign(&access)?,
            refresh_token: self.sign(&refresh)?,
            expires_in: self.lifetime,
            expiration: access.exp,
        })
    }

    /// Verifies signature, expiry and use; never says which check failed.
    fn verify_claims(
        &self,
        token: &str,
        token_use: &str,
        now: Timestamp,
    ) -> Result<(Principal, Timestamp, Option<KeyBinding>)> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::unauthorized());
        };
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| Error::unauthorized())?;
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        let signing_input = &token[..h.len() + 1 + c.len()];
        UnparsedPublicKey::new(&ED25519, self.public_key())
            .verify(signing_input.as_bytes(), &sig)
            .map_err(|_| Error::unauthorized())?;
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(h)
                .map_err(|_| Error::unauthorized())?,
        )
        .map_err(|_| Error::unauthorized())?;
        // A token that names another signing key is refused even if it verified
        // (defence in depth: a key we no longer hold must not be named as ours).
        if header.get("alg").and_then(|a| a.as_str()) != Some("EdDSA")
            || header.get("kid").and_then(|k| k.as_str()) != Some(self.kid.as_str())
        {
            return Err(Error::unauthorized());
        }
        let claims: Claims = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(c)
                .map_err(|_| Error::unauthorized())?,
        )
        .map_err(|_| Error::unauthorized())?;
        if claims.exp <= now || claims.token_use != token_use {
            return Err(Error::unauthorized());
        }
        let kind = PrincipalKind::parse(&claims.sub_type).ok_or_else(Error::unauthorized)?;
        Ok((
            Principal {
                id: claims.sub,
                kind,
                account_id: claims.account.bss,
            },
            claims.exp,
            claims.apikey,
        ))
    }

    /// The principal an access token stands for; the signature is checked once per token.
    pub fn authenticate(&self, token: &str) -> Result<Principal> {
        let now = timefmt::now();
        if let Ok(mut cache) = self.verified.lock() {
            if let Some((p, exp)) = cache.get(token) {
                if *exp > now {
                    metrics::record_cache(Cache::Token, true);
                    return Ok(p.clone());
                }
                cache.pop(token);
                return Err(Error::unauthorized());
            }
        }
        metrics::record_cache(Cache::Token, false);
        let (principal, exp, _) = self.verify_claims(token, "access", now)?;
        if let Ok(mut cache) = self.verified.lock() {
            cache.put(token.to_string(), (principal.clone(), exp));
        }
        Ok(principal)
    }

    pub fn principal_of_refresh(&self, token: &str) -> Result<Principal> {
        self.verify_claims(token, "refresh", timefmt::now())
            .map(|(p, _, _)| p)
    }

    /// A refresh token's principal and the API key it descends from.
    pub fn refresh_grant(&self, token: &str) -> Result<(Principal, Option<KeyBinding>)> {
        self.verify_claims(token, "refresh", timefmt::now())
            .map(|(p, _, k)| (p, k))
    }

    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.load(Ordering::Relaxed)
    }

    /// The public key as a JWKS document (RFC 8037 OKP key).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": b64(self.public_key())}]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(life: i64) -> TokenService {
        TokenService::new(&TokenService::generate_signing_key().unwrap(), life).unwrap()
    }

    fn principal() -> Principal {
        Principal {
            id: "u1".into(),
            kind: PrincipalKind::User,
            account_id: "a1".into(),
        }
    }

    #[test]
    fn issue_and_verify() {
        let s = svc(60);
        let t = s.issue(&principal()).unwrap();
        for _ in 0..5 {
            assert_eq!(s.authenticate(&t.access_token).unwrap(), principal());
        }
        assert_eq!(
            s.signature_checks(),
            1,
            "a token's signature is checked once, then cached"
        );
        assert!(s.authenticate(&t.refresh_token).is_err());
        assert_eq!(
            s.principal_of_refresh(&t.refresh_token).unwrap(),
            principal()
        );
    }

    #[test]
    fn refuses_tampered_foreign_and_expired() {
        let s = svc(60);
        let t = s.issue(&principal()).unwrap().access_token;
        let mut tampered = t.clone().into_bytes();
        let i = t.find('.').unwrap() + 3;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        assert!(s
            .authenticate(std::str::from_utf8(&tampered).unwrap())
            .is_err());
        assert!(svc(60).authenticate(&t).is_err());
        let expired = svc(0);
        let t = expired.issue(&principal()).unwrap().access_token;
        assert!(expired.authenticate(&t).is_err());
        assert!(s.authenticate("not.a.jwt").is_err());
        assert!(s.authenticate("").is_err());
    }
}
