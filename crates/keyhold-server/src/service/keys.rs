//! Key resources: create/import, read, list, move, delete, restore, purge, versions.

use keyhold_core::list::ListKeys;
use keyhold_core::model::{
    DualAuthPolicy, InstancePolicyData, InstancePolicyType, KeyRecord, KeyState, KeyVersion,
    PolicyMeta, RotationPolicy, VersionRef,
};
use keyhold_core::rules::{self, KeyAction};
use keyhold_core::timefmt::Timestamp;
use keyhold_core::validate::{self, MAX_ALIASES_PER_KEY, MAX_STANDARD_PAYLOAD};
use keyhold_core::{Error, Reason, Result};
use keyhold_crypto::{Binding, Purpose};
use keyhold_store::{RegistrationQuery, StoreError};
use zeroize::Zeroizing;

use super::{crypto_err, store_err, Service};
use crate::auth::Principal;

/// Caller-supplied key material: plain, or encrypted for secure import.
pub struct ImportMaterial {
    pub payload: Zeroizing<Vec<u8>>,
    pub encrypted_nonce: Option<Vec<u8>>,
    pub iv: Option<Vec<u8>>,
    pub algorithm: Option<String>,
}

impl ImportMaterial {
    pub fn is_secure(&self) -> bool {
        self.encrypted_nonce.is_some() || self.iv.is_some()
    }
}

#[derive(Default)]
pub struct PolicyOverrides {
    /// `(enabled, interval_month)`
    pub rotation: Option<(bool, Option<i64>)>,
    pub dual_auth: Option<bool>,
}

pub struct CreateKey {
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub aliases: Vec<String>,
    pub extractable: bool,
    pub expiration: Option<Timestamp>,
    pub material: Option<ImportMaterial>,
    pub key_ring: Option<String>,
    pub overrides: Option<PolicyOverrides>,
}

pub(crate) fn binding<'a>(key: &'a KeyRecord, version_id: &'a str) -> Binding<'a> {
    Binding {
        purpose: if key.extractable {
            Purpose::StandardKey
        } else {
            Purpose::RootKey
        },
        instance_id: &key.instance_id,
        object_id: &key.id,
        version_id,
    }
}

fn policy_meta(by: &Principal, now: Timestamp) -> PolicyMeta {
    PolicyMeta {
        id: uuid::Uuid::new_v4().to_string(),
        created_at: now,
        created_by: by.id.clone(),
        updated_at: now,
        updated_by: by.id.clone(),
    }
}

pub(crate) fn check_interval(interval: Option<i64>) -> Result<u8> {
    match interval {
        Some(n) if (1..=12).contains(&n) => Ok(n as u8),
        _ => Err(Error::invalid_field(
            "interval_month",
            "an integer between 1 and 12 (inclusive)",
        )),
    }
}

impl Service {
    fn check_create_access(&self, instance_id: &str, c: &CreateKey) -> Result<()> {
        let policies = self.instance_policies(instance_id)?;
        let policies = &policies.list;
        let Some(access) = policies
            .iter()
            .find(|p| p.policy_type == InstancePolicyType::KeyCreateImportAccess && p.enabled)
        else {
            return Ok(());
        };
        let InstancePolicyData::KeyCreateImportAccess(rules) = &access.data else {
            return Ok(());
        };
        let (allowed, what) = match (&c.material, c.extractable) {
            (None, false) => (rules.create_root_key, "creating root keys"),
            (None, true) => (rules.create_standard_key, "creating standard keys"),
            (Some(_), false) => (rules.import_root_key, "importing root keys"),
            (Some(_), true) => (rules.import_standard_key, "importing standard keys"),
        };
        if !allowed {
            return Err(Error::new(
                Reason::KeyCreateImportAccess,
                format!("The instance policy keyCreateImportAccess forbids {what}"),
            ));
        }
        if rules.enforce_token && c.material.as_ref().is_some_and(|m| !m.is_secure()) {
            return Err(Error::new(
                Reason::KeyCreateImportAccess,
                "The instance policy keyCreateImportAccess requires an import token",
            ));
        }
        Ok(())
    }

    /// The policies a new key starts with: instance defaults, then per-key overrides.
    fn initial_policies(
        &self,
        instance_id: &str,
        c: &CreateKey,
        by: &Principal,
        now: Timestamp,
    ) -> Result<(Option<RotationPolicy>, Option<DualAuthPolicy>)> {
        let policies = self.instance_policies(instance_id)?;
        let policies = &policies.list;
        let mut rotation = None;
        let mut dual = None;
        for p in policies.iter().filter(|p| p.enabled) {
            match &p.data {
                InstancePolicyData::Rotation {
                    interval_month: Some(m),
                } if !c.extractable => {
                    rotation = Some(RotationPolicy {
                        enabled: true,
                        interval_month: *m,
                        meta: policy_meta(by, now),
                    });
                }
                InstancePolicyData::DualAuthDelete => {
                    dual = Some(DualAuthPolicy {
                        enabled: true,
                        meta: policy_meta(by, now),
                    })
                }
                _ => {}
            }
        }
        if let Some(o) = &c.overrides {
            if let Some((enabled, interval)) = o.rotation {
                if c.extractable {
                    return Err(Error::field(
                        Reason::KeyRootReq,
                        "rotation",
                        "A rotation policy can only be set on a root key",
                    ));
                }
                let interval_month = match (enabled, interval) {
                    (false, None) => rotation.as_ref().map(|r| r.interval_month).unwrap_or(1),
                    (_, i) => check_interval(i)?,
                };
                rotation = Some(RotationPolicy {
                    enabled,
                    interval_month,
                    meta: policy_meta(by, now),
                });
            }
            if let Some(enabled) = o.dual_auth {
                dual = Some(DualAuthPolicy {
                    enabled,
                    meta: policy_meta(by, now),
                });
            }
        }
        Ok((rotation, dual))
    }

    pub fn create_key(
        &self,
        instance_id: &str,
        by: &Principal,
        c: CreateKey,
    ) -> Result<(KeyRecord, Option<Zeroizing<Vec<u8>>>)> {
        validate::key_name(&c.name)?;
        if let Some(d) = &c.description {
            validate::description(d)?;
        }
        validate::tags(&c.tags)?;
        if c.aliases.len() > MAX_ALIASES_PER_KEY {
            return Err(Error::new(
                Reason::AliasLimitReached,
                "A key can have at most 5 aliases",
            ));
        }
        for a in &c.aliases {
            validate::alias(a)?;
        }
        let now = self.now();
        if c.expiration.is_some_and(|e| e <= now) {
            return Err(Error::invalid_field(
                "expirationDate",
                "a date in the future, in RFC 3339 format",
            ));
        }
        let key_ring = c.key_ring.clone().unwrap_or_else(|| "default".into());
        self.ensure_ring(instance_id, &key_ring)?;
        self.check_create_access(instance_id, &c)?;
        let (rotation, dual_auth) = self.initial_policies(instance_id, &c, by, now)?;

        let key_id = Self::new_id();
        let version_id = Self::new_id();
        let purpose = if c.extractable {
            Purpose::StandardKey
        } else {
            Purpose::RootKey
        };
        let bind = Binding {
            purpose,
            instance_id,
            object_id: &key_id,
            version_id: &version_id,
        };
        let imported = c.material.is_some();
        let blob = match &c.material {
            None => self.unit.generate_wrapped(&bind, 32).map_err(crypto_err)?,
            Some(m) => {
                let material = if m.is_secure() {
                    if c.extractable {
                        return Err(Error::field(
                            Reason::KeyRootReq,
                            "encryptedNonce",
                            "Secure import with an import token is for root keys only",
                        ));
                    }
                    self.open_secure_import(instance_id, m)?
                } else {
                    Zeroizing::new(m.payload.to_vec())
                };
                check_material(c.extractable, &material)?;
                self.unit
                    .wrap_material(&bind, &material)
                    .map_err(crypto_err)?
            }
        };
        let key = KeyRecord {
            instance_id: instance_id.to_string(),
            id: key_id.clone(),
            name: c.name,
            description: c.description,
            tags: c.tags,
            aliases: c.aliases,
            extractable: c.extractable,
            imported,
            state: KeyState::Active,
            expiration: c.expiration,
            key_ring,
            created_at: now,
            created_by: by.id.clone(),
            updated_at: now,
            last_rotated_at: None,
            last_action_at: now,
            deleted_at: None,
            deleted_by: None,
            rotation,
            dual_auth,
            deletion_authorization: None,
            current_version: VersionRef {
                id: version_id.clone(),
                created_at: now,
            },
            version_count: 1,
            revision: 1,
        };
        let version = KeyVersion {
            instance_id: instance_id.to_string(),
            key_id,
            version_id,
            seq: 1,
            created_at: now,
            blob,
        };
        self.store.insert_key(&key, &version).map_err(|e| match e {
            StoreError::Duplicate => Error::field(
                Reason::DuplicateResource,
                "aliases",
                "An alias is already in use in this instance",
            ),
            other => store_err(other),
        })?;
        let payload = if key.extractable {
            Some(
                self.unit
                    .unwrap_material(&binding(&key, &version.version_id), &version.blob)
                    .map_err(crypto_err)?,
            )
        } else {
            None
        };
        Ok((key, payload))
    }

    pub(crate) fn ensure_ring(&self, instance_id: &str, ring: &str) -> Result<()> {
        if ring == "default" {
            return Ok(());
        }
        validate::key_ring_id(ring)?;
        match self.store.get_ring(instance_id, ring).map_err(store_err)? {
            Some(_) => Ok(()),
            None => Err(Error::new(
                Reason::KeyRingNotFound,
                format!("key ring '{ring}' does not exist"),
            )),
        }
    }

    /// A key with, for standard keys, its payload.
    pub fn get_key(
        &self,
        instance_id: &str,
        id: &str,
        with_payload: bool,
    ) -> Result<(KeyRecord, Option<Zeroizing<Vec<u8>>>)> {
        let key = self.resolve_key(instance_id, id)?;
        if !with_payload || !key.extractable || key.state == KeyState::Destroyed {
            return Ok((key, None));
        }
        let versions = self
            .store
            .versions(instance_id, &key.id)
            .map_err(store_err)?;
        let current = versions.first().ok_or_else(Error::internal)?;
        let payload = self
            .unit
            .unwrap_material(&binding(&key, &current.version_id), &current.blob)
            .map_err(crypto_err)?;
        Ok((key, Some(payload)))
    }

    pub fn list_keys(&self, instance_id: &str, q: &ListKeys) -> Result<Vec<KeyRecord>> {
        self.store
            .list_keys(instance_id, q, self.now())
            .map_err(store_err)
    }

    pub fn count_keys(&self, instance_id: &str, q: &ListKeys) -> Result<u64> {
        self.store
            .count_keys(instance_id, q, self.now())
            .map_err(store_err)
    }

    /// Moves a key to another ring (the only patchable attribute).
    pub fn move_key(
        &self,
        instance_id: &str,
        id: &str,
        current_ring: Option<&str>,
        new_ring: &str,
    ) -> Result<KeyRecord> {
        self.ensure_ring(instance_id, new_ring)?;
        self.modify_key(instance_id, id, |key, now| {
            rules::check_state(key, KeyAction::Patch, now)?;
            if current_ring.is_some_and(|r| r != key.key_ring) {
                return Err(Error::new(
                    Reason::KeyNotFound,
                    "key does not exist in the key ring named by X-Kms-Key-Ring",
                ));
            }
            key.key_ring = new_ring.to_string();
            Ok(())
        })
    }

    pub fn delete_key(
        &self,
        instance_id: &str,
        id: &str,
        by: &Principal,
        force: bool,
    ) -> Result<KeyRecord> {
        let key = self.resolve_key(instance_id, id)?;
        rules::check_state(&key, KeyAction::Delete, self.now())?;
        let q = RegistrationQuery {
            key_id: Some(key.id.clone()),
            limit: 5000,
            ..Default::default()
        };
        let (regs, total) = self
            .store
            .list_registrations(instance_id, &q)
            .map_err(store_err)?;
        if regs.iter().any(|r| r.prevent_key_deletion) {
            return Err(Error::new(
                Reason::PrevKeyDel,
                "The key is protecting a resource that prevents its deletion",
            ));
        }
        if total > 0 && !force {
            return Err(Error::new(Reason::ProtectedResource, "The key is protecting one or more cloud resources; use force=true to delete it anyway"));
        }
        let deleted = self.modify_key(instance_id, &key.id, |key, now| {
            rules::check_state(key, KeyAction::Delete, now)?;
            if key.dual_auth_enabled() {
                let ok = key.deletion_authorization.as_ref().is_some_and(|a| a.by != by.id && a.expires_at > now);
                if !ok {
                    return Err(Error::new(
                        Reason::AuthorizationsNotMet,
                        "The key has a dual authorization policy: another user must set it for deletion first",
                    ));
                }
            }
            key.state = KeyState::Destroyed;
            key.deleted_at = Some(now);
            key.deleted_by = Some(by.id.clone());
            key.last_action_at = now;
            key.deletion_authorization = None;
            Ok(())
        })?;
        for r in regs {
            let _ = self
                .store
                .delete_registration(instance_id, &r.key_id, &r.resource_crn);
        }
        Ok(deleted)
    }

    pub fn restore_key(&self, instance_id: &str, id: &str) -> Result<KeyRecord> {
        let rules = self.rules;
        self.modify_key(instance_id, id, |key, now| {
            rules::check_restore(key, &rules, now)?;
            key.state = KeyState::Active;
            key.deleted_at = None;
            key.deleted_by = None;
            key.last_action_at = now;
            Ok(())
        })
    }

    pub fn purge_key(&self, instance_id: &str, id: &str) -> Result<KeyRecord> {
        let key = self.resolve_key(instance_id, id)?;
        rules::check_purge(&key, &self.rules, self.now())?;
        self.purge_now(instance_id, &key.id)?;
        Ok(key)
    }

    /// Versions newest first, with the total count.
    pub fn key_versions(
        &self,
        instance_id: &str,
        id: &str,
        all_states: bool,
    ) -> Result<Vec<VersionRef>> {
        let key = self.resolve_key(instance_id, id)?;
        if key.state == KeyState::Destroyed && !all_states {
            return Err(Error::key_deleted());
        }
        let versions = self
            .store
            .versions(instance_id, &key.id)
            .map_err(store_err)?;
        Ok(versions
            .into_iter()
            .map(|v| VersionRef {
                id: v.version_id,
                created_at: v.created_at,
            })
            .collect())
    }
}

pub(crate) fn check_material(extractable: bool, material: &[u8]) -> Result<()> {
    if extractable {
        if material.is_empty() || material.len() > MAX_STANDARD_PAYLOAD {
            return Err(Error::invalid_field(
                "payload",
                "base64 encoded key material of 1 to 7,500 bytes",
            ));
        }
    } else if ![16, 24, 32].contains(&material.len()) {
        return Err(Error::invalid_field(
            "payload",
            "base64 encoded key material of 16, 24 or 32 bytes (128, 192 or 256 bits)",
        ));
    }
    Ok(())
}
