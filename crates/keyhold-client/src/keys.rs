//! Key operations: create, import, list, get, the key actions, versions, lifecycle.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::client::{Call, Client};
use crate::error::{ClientError, Result};
use crate::model::{
    Collection, Key, KeyListQuery, KeyVersion, NewKey, Registration, Rewrapped, Unwrapped, Wrapped,
};

/// Percent-encodes one path segment (ids, aliases and ring names are plain words, but a
/// caller's typo must not be able to change the route).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn first<T>(c: Collection<T>, what: &str) -> Result<T> {
    c.resources
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Decode(format!("{what}: the answer has no resource")))
}

fn aad_json(aad: &[String]) -> Value {
    json!(aad)
}

impl Client {
    /// Creates (or, with a payload, imports) a key; answers the full key.
    pub async fn create_key(&self, key: &NewKey) -> Result<Key> {
        let call = Call::new(Method::POST, "keys")
            .header("Prefer", "return=representation")
            .json(key.to_json());
        first(self.send_json(&call).await?, "create key")
    }

    /// Creates a key with its own rotation and dual-authorization policies, overriding
    /// the instance's (`POST /keys_with_policy_overrides`).
    pub async fn create_key_with_overrides(
        &self,
        key: &NewKey,
        rotation_months: Option<u32>,
        dual_auth_delete: Option<bool>,
    ) -> Result<Key> {
        let mut body = key.to_json();
        if let Some(r) = body["resources"].get_mut(0) {
            if let Some(m) = rotation_months {
                r["rotation"] = json!({"enabled": true, "interval_month": m});
            }
            if let Some(d) = dual_auth_delete {
                r["dualAuthDelete"] = json!({"enabled": d});
            }
        }
        let call = Call::new(Method::POST, "keys_with_policy_overrides")
            .header("Prefer", "return=representation")
            .json(body);
        first(
            self.send_json(&call).await?,
            "create key with policy overrides",
        )
    }

    /// Lists keys (no payloads).
    pub async fn list_keys(&self, q: &KeyListQuery) -> Result<Vec<Key>> {
        let states = (!q.states.is_empty()).then(|| {
            q.states
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(",")
        });
        let call = Call::new(Method::GET, "keys")
            .query_opt("limit", q.limit)
            .query_opt("offset", q.offset)
            .query_opt("state", states)
            .query_opt("extractable", q.extractable)
            .query_opt("search", q.search.clone());
        Ok(self.send_json::<Collection<Key>>(&call).await?.resources)
    }

    /// The number of keys (`HEAD /keys`, header `Key-Total`).
    pub async fn key_total(&self) -> Result<u64> {
        let ans = self.send(&Call::new(Method::HEAD, "keys")).await?;
        ans.headers
            .get("key-total")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Decode("HEAD /keys without Key-Total".into()))
    }

    /// A key by id or alias, with its payload if it is a standard key.
    pub async fn get_key(&self, id: &str) -> Result<Key> {
        let call = Call::new(Method::GET, format!("keys/{}", seg(id)));
        first(self.send_json(&call).await?, "get key")
    }

    /// A key's metadata (never a payload).
    pub async fn get_key_metadata(&self, id: &str) -> Result<Key> {
        let call = Call::new(Method::GET, format!("keys/{}/metadata", seg(id)));
        first(self.send_json(&call).await?, "get key metadata")
    }

    async fn action<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        action: &str,
        body: Value,
    ) -> Result<T> {
        let call = Call::new(Method::POST, format!("keys/{}/actions/{action}", seg(id))).json(body);
        self.send_json(&call).await
    }

    async fn action_no_content(&self, id: &str, action: &str, body: Option<Value>) -> Result<()> {
        let mut call = Call::new(Method::POST, format!("keys/{}/actions/{action}", seg(id)));
        if let Some(b) = body {
            call = call.json(b);
        }
        self.send(&call).await.map(|_| ())
    }

    /// Wraps `plaintext` (or, with `None`, a DEK the service generates) under a root key.
    pub async fn wrap(
        &self,
        id: &str,
        plaintext: Option<&[u8]>,
        aad: &[String],
    ) -> Result<Wrapped> {
        let mut body = json!({});
        if let Some(p) = plaintext {
            body["plaintext"] = Value::String(STANDARD.encode(p));
        }
        if !aad.is_empty() {
            body["aad"] = aad_json(aad);
        }
        self.action(id, "wrap", body).await
    }

    /// Unwraps a ciphertext made by `wrap` (any version of the key).
    pub async fn unwrap(&self, id: &str, ciphertext: &str, aad: &[String]) -> Result<Unwrapped> {
        let mut body = json!({"ciphertext": ciphertext});
        if !aad.is_empty() {
            body["aad"] = aad_json(aad);
        }
        self.action(id, "unwrap", body).await
    }

    /// Unwraps and returns the plaintext bytes only (zeroized on drop).
    pub async fn unwrap_bytes(
        &self,
        id: &str,
        ciphertext: &str,
        aad: &[String],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let u = self.unwrap(id, ciphertext, aad).await?;
        let text = Zeroizing::new(u.plaintext);
        STANDARD
            .decode(text.as_bytes())
            .map(Zeroizing::new)
            .map_err(|e| ClientError::Decode(format!("unwrap plaintext is not base64: {e}")))
    }

    /// Re-encrypts a ciphertext under the key's newest version.
    pub async fn rewrap(&self, id: &str, ciphertext: &str, aad: &[String]) -> Result<Rewrapped> {
        let mut body = json!({"ciphertext": ciphertext});
        if !aad.is_empty() {
            body["aad"] = aad_json(aad);
        }
        self.action(id, "rewrap", body).await
    }

    /// Rotates a root key; an imported key needs new material (`payload`, base64).
    pub async fn rotate(&self, id: &str, payload: Option<&str>) -> Result<()> {
        let body = payload.map(|p| json!({"payload": p}));
        self.action_no_content(id, "rotate", body).await
    }

    /// Rotates an imported key with material encrypted for the import token.
    pub async fn rotate_secure(
        &self,
        id: &str,
        fields: &crate::import::SecureFields,
    ) -> Result<()> {
        let body = json!({"payload": fields.payload.as_str(), "encryptedNonce": fields.encrypted_nonce,
            "iv": fields.iv, "encryptionAlgorithm": "RSAES_OAEP_SHA_256"});
        self.action_no_content(id, "rotate", Some(body)).await
    }

    pub async fn disable_key(&self, id: &str) -> Result<()> {
        self.action_no_content(id, "disable", None).await
    }

    pub async fn enable_key(&self, id: &str) -> Result<()> {
        self.action_no_content(id, "enable", None).await
    }

    /// Dual authorization: approve (`true`) or withdraw the approval of a deletion.
    pub async fn set_key_for_deletion(&self, id: &str, set: bool) -> Result<()> {
        let action = if set {
            "setKeyForDeletion"
        } else {
            "unsetKeyForDeletion"
        };
        self.action_no_content(id, action, None).await
    }

    pub async fn sync_key(&self, id: &str) -> Result<()> {
        self.action_no_content(id, "sync", None).await
    }

    /// Deletes a key (state 5, restorable for 30 days); answers the deleted key.
    pub async fn delete_key(&self, id: &str, force: bool) -> Result<Key> {
        let call = Call::new(Method::DELETE, format!("keys/{}", seg(id)))
            .query_opt("force", force.then_some(true))
            .header("Prefer", "return=representation");
        first(self.send_json(&call).await?, "delete key")
    }

    pub async fn restore_key(&self, id: &str) -> Result<Key> {
        let call = Call::new(Method::POST, format!("keys/{}/restore", seg(id)));
        first(self.send_json(&call).await?, "restore key")
    }

    /// Removes a deleted key for good (needs the KeyPurge role, 4 h after deletion).
    pub async fn purge_key(&self, id: &str) -> Result<Key> {
        let call = Call::new(Method::DELETE, format!("keys/{}/purge", seg(id)))
            .header("Prefer", "return=representation");
        first(self.send_json(&call).await?, "purge key")
    }

    /// The key's versions, newest first.
    pub async fn key_versions(&self, id: &str) -> Result<Vec<KeyVersion>> {
        let call = Call::new(Method::GET, format!("keys/{}/versions", seg(id)))
            .query("allKeyStates", true);
        Ok(self
            .send_json::<Collection<KeyVersion>>(&call)
            .await?
            .resources)
    }

    /// Moves a key to another key ring.
    pub async fn move_key(&self, id: &str, ring: &str) -> Result<Key> {
        let call =
            Call::new(Method::PATCH, format!("keys/{}", seg(id))).json(json!({"keyRingID": ring}));
        first(self.send_json(&call).await?, "patch key")
    }

    /// The resources registered as using a key.
    pub async fn key_registrations(&self, id: &str) -> Result<Vec<Registration>> {
        let call = Call::new(Method::GET, format!("keys/{}/registrations", seg(id)));
        Ok(self
            .send_json::<Collection<Registration>>(&call)
            .await?
            .resources)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_escaped() {
        assert_eq!(super::seg("abc-DEF_1.2~"), "abc-DEF_1.2~");
        assert_eq!(super::seg("../x?y"), "..%2Fx%3Fy");
    }
}
