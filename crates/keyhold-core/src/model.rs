//! The stored shape of Keyhold's resources. Timestamps are unix seconds.

use serde::{Deserialize, Serialize};

use crate::timefmt::Timestamp;

/// Key states as numbered by Key Protect (there is no 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum KeyState {
    PreActivation = 0,
    Active = 1,
    Suspended = 2,
    Deactivated = 3,
    Destroyed = 5,
}

impl From<KeyState> for u8 {
    fn from(s: KeyState) -> u8 {
        s as u8
    }
}

impl TryFrom<u8> for KeyState {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Ok(match v {
            0 => KeyState::PreActivation,
            1 => KeyState::Active,
            2 => KeyState::Suspended,
            3 => KeyState::Deactivated,
            5 => KeyState::Destroyed,
            other => return Err(format!("no key state {other}")),
        })
    }
}

/// Who made a change: the principal id as it appears in `createdBy` etc.
pub type PrincipalId = String;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMeta {
    pub id: String,
    pub created_at: Timestamp,
    pub created_by: PrincipalId,
    pub updated_at: Timestamp,
    pub updated_by: PrincipalId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    pub enabled: bool,
    pub interval_month: u8,
    pub meta: PolicyMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DualAuthPolicy {
    pub enabled: bool,
    pub meta: PolicyMeta,
}

/// A pending dual-authorization deletion: who authorized it, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionAuthorization {
    pub by: PrincipalId,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRef {
    pub id: String,
    pub created_at: Timestamp,
}

/// One key's metadata. Key material lives in [`KeyVersion`] blobs, wrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub instance_id: String,
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub aliases: Vec<String>,
    pub extractable: bool,
    pub imported: bool,
    /// The stored state; see [`KeyRecord::state_at`] for the effective one.
    pub state: KeyState,
    pub expiration: Option<Timestamp>,
    pub key_ring: String,
    pub created_at: Timestamp,
    pub created_by: PrincipalId,
    pub updated_at: Timestamp,
    pub last_rotated_at: Option<Timestamp>,
    /// Last lifecycle action (disable, enable, delete, restore): enable/restore
    /// must wait a cool-down after it.
    pub last_action_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
    pub deleted_by: Option<PrincipalId>,
    pub rotation: Option<RotationPolicy>,
    pub dual_auth: Option<DualAuthPolicy>,
    pub deletion_authorization: Option<DeletionAuthorization>,
    pub current_version: VersionRef,
    pub version_count: u32,
    /// Optimistic-concurrency counter: every write must name the revision it read.
    pub revision: i64,
}

impl KeyRecord {
    /// The state a caller sees at `now`: an expired Active/Suspended key is Deactivated.
    pub fn state_at(&self, now: Timestamp) -> KeyState {
        match (self.state, self.expiration) {
            (KeyState::Active | KeyState::Suspended, Some(exp)) if exp <= now => {
                KeyState::Deactivated
            }
            (s, _) => s,
        }
    }

    pub fn is_root(&self) -> bool {
        !self.extractable
    }

    pub fn dual_auth_enabled(&self) -> bool {
        self.dual_auth.as_ref().is_some_and(|p| p.enabled)
    }
}

/// One version of a key's material, wrapped by the instance master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    pub instance_id: String,
    pub key_id: String,
    pub version_id: String,
    /// 1 for the first version; the highest is the current one.
    pub seq: u32,
    pub created_at: Timestamp,
    pub blob: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRing {
    pub instance_id: String,
    pub id: String,
    pub created_at: Timestamp,
    pub created_by: PrincipalId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub instance_id: String,
    pub key_id: String,
    pub resource_crn: String,
    pub description: Option<String>,
    pub registration_metadata: Option<String>,
    pub prevent_key_deletion: bool,
    pub key_version: VersionRef,
    pub created_at: Timestamp,
    pub created_by: PrincipalId,
    pub updated_at: Timestamp,
    pub updated_by: PrincipalId,
}

/// The six instance policy types, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstancePolicyType {
    #[serde(rename = "dualAuthDelete")]
    DualAuthDelete,
    #[serde(rename = "metrics")]
    Metrics,
    #[serde(rename = "allowedNetwork")]
    AllowedNetwork,
    #[serde(rename = "allowedIP")]
    AllowedIp,
    #[serde(rename = "keyCreateImportAccess")]
    KeyCreateImportAccess,
    #[serde(rename = "rotation")]
    Rotation,
}

impl InstancePolicyType {
    pub const ALL: [InstancePolicyType; 6] = [
        Self::DualAuthDelete,
        Self::Metrics,
        Self::AllowedNetwork,
        Self::AllowedIp,
        Self::KeyCreateImportAccess,
        Self::Rotation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::DualAuthDelete => "dualAuthDelete",
            Self::Metrics => "metrics",
            Self::AllowedNetwork => "allowedNetwork",
            Self::AllowedIp => "allowedIP",
            Self::KeyCreateImportAccess => "keyCreateImportAccess",
            Self::Rotation => "rotation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCreateImportAccess {
    pub create_root_key: bool,
    pub create_standard_key: bool,
    pub import_root_key: bool,
    pub import_standard_key: bool,
    pub enforce_token: bool,
}

impl Default for KeyCreateImportAccess {
    fn default() -> Self {
        KeyCreateImportAccess {
            create_root_key: true,
            create_standard_key: true,
            import_root_key: true,
            import_standard_key: true,
            enforce_token: false,
        }
    }
}

/// Policy-specific settings; `None` attributes where the type has none or it is disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstancePolicyData {
    DualAuthDelete,
    Metrics,
    AllowedNetwork { allowed_network: String },
    AllowedIp { allowed_ip: Vec<String> },
    KeyCreateImportAccess(KeyCreateImportAccess),
    Rotation { interval_month: Option<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancePolicy {
    pub policy_type: InstancePolicyType,
    pub enabled: bool,
    pub data: InstancePolicyData,
    pub created_at: Timestamp,
    pub created_by: PrincipalId,
    pub updated_at: Timestamp,
    pub updated_by: PrincipalId,
}

/// The instance's secure-import token. The RSA private key is stored wrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportToken {
    pub instance_id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub max_retrievals: u32,
    pub remaining_retrievals: u32,
    /// PEM of the RSA public key (SubjectPublicKeyInfo).
    pub public_key_pem: String,
    /// 12 random bytes the importer must encrypt under the key material.
    pub nonce: Vec<u8>,
    pub wrapped_private_key: Vec<u8>,
    /// Id binding the wrapped private key (MAC binding in the crypto unit).
    pub token_id: String,
}

/// A service instance of the resource controller: a key-management instance
/// (`kms`, usable with `Bluemix-Instance`), a crypto instance (`hs-crypto`) or
/// any other service's instance (e.g. a storage service that calls Keyhold).
/// Fields beyond the first five came with the resource controller; documents
/// stored before it read as active `kms` instances on the shared unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub account_id: String,
    pub region: String,
    pub created_at: Timestamp,
    #[serde(default = "default_service")]
    pub service: String,
    /// The crypto instance (`hs-crypto`) a `kms` instance is bound to (dedicated,
    /// KYOK); `None`: the platform's shared unit (standard, BYOK).
    #[serde(default)]
    pub crypto_instance: Option<String>,
    /// Crypto units of an `hs-crypto` instance.
    #[serde(default)]
    pub units: Option<u32>,
    #[serde(default)]
    pub state: InstanceState,
    #[serde(default)]
    pub updated_at: Timestamp,
    #[serde(default)]
    pub created_by: PrincipalId,
}

fn default_service() -> String {
    crate::resource::SERVICE_KMS.to_string()
}

/// An instance's lifecycle state, as the resource controller names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    #[default]
    Active,
    /// Deleted with `force` while it still held keys: unusable, its keys kept
    /// in the store for an operator (nothing is destroyed by a delete).
    PendingReclamation,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Active => "active",
            InstanceState::PendingReclamation => "pending_reclamation",
        }
    }
}

impl Instance {
    /// A key-management instance on the shared unit (what dev mode creates).
    pub fn kms(
        id: String,
        name: String,
        account_id: String,
        region: String,
        created_at: Timestamp,
    ) -> Instance {
        Instance {
            id,
            name,
            account_id,
            region,
            created_at,
            service: default_service(),
            crypto_instance: None,
            units: None,
            state: InstanceState::Active,
            updated_at: created_at,
            created_by: String::new(),
        }
    }

    /// Serves the Key Protect API (`Bluemix-Instance`): an active `kms` instance.
    pub fn is_usable_kms(&self) -> bool {
        self.service == crate::resource::SERVICE_KMS && self.state == InstanceState::Active
    }

    /// The resource controller's CRN of this instance.
    pub fn crn(&self) -> String {
        format!(
            "crn:v1:keyhold:private:{}:{}:a/{}:{}::",
            self.service, self.region, self.account_id, self.id
        )
    }

    pub fn crn_prefix(&self) -> String {
        format!(
            "crn:v1:keyhold:local:kms:{}:a/{}:{}",
            self.region, self.account_id, self.id
        )
    }
}
