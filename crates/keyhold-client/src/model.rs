//! The API's resources as Rust types (keyprotect-api.md §6). Every type keeps the fields
//! it does not name in `extra`, so printing one as JSON loses nothing the server sent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
pub const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";

/// The `{"metadata":…,"resources":[…]}` envelope most answers come in.
#[derive(Debug, Deserialize)]
pub(crate) struct Collection<T> {
    #[serde(default = "Vec::new")]
    pub resources: Vec<T>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VersionRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
}

/// A key as the API returns it. `payload` is only there for standard keys on a get.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: u8,
    #[serde(default)]
    pub extractable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, rename = "keyRingID", skip_serializing_if = "Option::is_none")]
    pub key_ring_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<VersionRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Key {
    /// "root" or "standard".
    pub fn kind(&self) -> &'static str {
        if self.extractable {
            "standard"
        } else {
            "root"
        }
    }
}

/// The words for a key state number.
pub fn state_name(state: u8) -> &'static str {
    match state {
        0 => "pre-activation",
        1 => "active",
        2 => "suspended",
        3 => "deactivated",
        5 => "destroyed",
        _ => "unknown",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The answer to wrap: the ciphertext, and the DEK when the server generated it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wrapped {
    pub ciphertext: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<VersionRef>,
}

/// The answer to unwrap. `ciphertext`/`rewrapped_key_version` are there when the
/// ciphertext was made by an older key version (the server rewraps it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unwrapped {
    pub plaintext: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<VersionRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrapped_key_version: Option<VersionRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rewrapped {
    pub ciphertext: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<VersionRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrapped_key_version: Option<VersionRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alias {
    #[serde(default)]
    pub key_id: String,
    pub alias: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRing {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An import token. `payload` (base64 of a PEM public key) and `nonce` only on a get.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allowed_retrievals: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_retrievals: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A key or instance policy; their shapes differ by type, so they stay JSON.
pub type Policy = Value;
/// A registration (a resource that uses a root key).
pub type Registration = Value;

/// A key to create or import. Leave `payload` empty to have the service generate one.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub description: Option<String>,
    /// `true` = standard key (payload retrievable), `false` = root key.
    pub extractable: bool,
    pub aliases: Vec<String>,
    pub tags: Vec<String>,
    /// RFC 3339.
    pub expiration_date: Option<String>,
    /// Base64 key material (plain import) or RSA-OAEP ciphertext (secure import).
    pub payload: Option<zeroize::Zeroizing<String>>,
    /// Secure import: base64 AES-GCM encrypted nonce and its IV.
    pub encrypted_nonce: Option<String>,
    pub iv: Option<String>,
}

impl NewKey {
    pub(crate) fn to_json(&self) -> Value {
        let mut r = Map::new();
        r.insert("type".into(), KEY_TYPE.into());
        r.insert("name".into(), self.name.clone().into());
        r.insert("extractable".into(), self.extractable.into());
        if let Some(d) = &self.description {
            r.insert("description".into(), d.clone().into());
        }
        if !self.aliases.is_empty() {
            r.insert("aliases".into(), self.aliases.clone().into());
        }
        if !self.tags.is_empty() {
            r.insert("tags".into(), self.tags.clone().into());
        }
        if let Some(e) = &self.expiration_date {
            r.insert("expirationDate".into(), e.clone().into());
        }
        if let Some(p) = &self.payload {
            r.insert("payload".into(), p.as_str().into());
        }
        if let (Some(n), Some(iv)) = (&self.encrypted_nonce, &self.iv) {
            r.insert("encryptedNonce".into(), n.clone().into());
            r.insert("iv".into(), iv.clone().into());
            r.insert("encryptionAlgorithm".into(), "RSAES_OAEP_SHA_256".into());
        }
        serde_json::json!({
            "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
            "resources": [Value::Object(r)],
        })
    }
}

/// Filters for listing keys.
#[derive(Debug, Clone, Default)]
pub struct KeyListQuery {
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    /// State numbers; empty = the server's default (all but destroyed).
    pub states: Vec<u8>,
    pub extractable: Option<bool>,
    pub search: Option<String>,
}
