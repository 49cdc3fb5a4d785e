//! Key rings, aliases and registrations.

use keyhold_core::model::{KeyRecord, KeyRing, KeyState, Registration, VersionRef};
use keyhold_core::rules::{self, KeyAction};
use keyhold_core::validate::{self, MAX_ALIASES_PER_KEY};
use keyhold_core::{Error, Reason, Result};
use keyhold_store::{RegistrationQuery, StoreError};

use super::{store_err, KeyWrite, Service};
use crate::auth::Principal;

/// Fields of a registration write; `None` leaves a field as it is (PATCH).
#[derive(Default)]
pub struct RegistrationInput {
    pub prevent_key_deletion: Option<bool>,
    pub description: Option<String>,
    pub registration_metadata: Option<String>,
    pub key_version_id: Option<String>,
}

fn registration_not_found() -> Error {
    Error::new(Reason::NotFound, "The registration does not exist")
}

impl Service {
    pub fn create_ring(&self, instance_id: &str, ring_id: &str, by: &Principal) -> Result<KeyRing> {
        validate::key_ring_id(ring_id)?;
        if ring_id == "default" {
            return Err(Error::new(
                Reason::DuplicateResource,
                "The key ring 'default' already exists",
            ));
        }
        let ring = KeyRing {
            instance_id: instance_id.into(),
            id: ring_id.into(),
            created_at: self.now(),
            created_by: by.id.clone(),
        };
        self.store.create_ring(&ring).map_err(|e| match e {
            StoreError::Duplicate => Error::new(
                Reason::DuplicateResource,
                format!("The key ring '{ring_id}' already exists"),
            ),
            other => store_err(other),
        })?;
        Ok(ring)
    }

    /// All rings, `default` first.
    pub fn list_rings(&self, instance_id: &str) -> Result<Vec<KeyRing>> {
        let instance = self
            .instance(instance_id)?
            .ok_or_else(Error::unauthorized)?;
        let mut rings = vec![KeyRing {
            instance_id: instance_id.into(),
            id: "default".into(),
            created_at: instance.created_at,
            created_by: "system".into(),
        }];
        rings.extend(self.store.list_rings(instance_id).map_err(store_err)?);
        Ok(rings)
    }

    pub fn delete_ring(&self, instance_id: &str, ring_id: &str, force: bool) -> Result<()> {
        if ring_id == "default" {
            return Err(Error::new(
                Reason::FeatureRestricted,
                "The default key ring cannot be deleted",
            ));
        }
        self.store.delete_ring(instance_id, ring_id, force).map_err(|e| match e {
            StoreError::NotFound => Error::new(Reason::KeyRingNotFound, format!("key ring '{ring_id}' does not exist")),
            StoreError::NotEmpty => Error::new(
                Reason::KeyRingNotEmpty,
                "The key ring holds keys: move or delete them first (with force=true, only destroyed keys may remain)",
            ),
            other => store_err(other),
        })?;
        // Destroyed keys may have moved to `default`: forget cached copies.
        self.cache_invalidate_all();
        Ok(())
    }

    fn cache_invalidate_all(&self) {
        self.cache.clear();
    }

    pub fn add_alias(&self, instance_id: &str, id: &str, alias: &str) -> Result<KeyRecord> {
        validate::alias(alias)?;
        self.modify_key_with(instance_id, id, |key, now| {
            rules::check_state(key, KeyAction::Alias, now)?;
            if key.aliases.iter().any(|a| a == alias) {
                return Ok(KeyWrite::Nothing);
            }
            if key.aliases.len() >= MAX_ALIASES_PER_KEY {
                return Err(Error::new(
                    Reason::AliasLimitReached,
                    "A key can have at most 5 aliases",
                ));
            }
            key.aliases.push(alias.to_string());
            Ok(KeyWrite::Alias {
                alias: alias.to_string(),
                add: true,
            })
        })
    }

    pub fn remove_alias(&self, instance_id: &str, id: &str, alias: &str) -> Result<()> {
        self.modify_key_with(instance_id, id, |key, _| {
            if !key.aliases.iter().any(|a| a == alias) {
                return Err(Error::new(
                    Reason::AliasNotFound,
                    format!("The key has no alias '{alias}'"),
                ));
            }
            key.aliases.retain(|a| a != alias);
            Ok(KeyWrite::Alias {
                alias: alias.to_string(),
                add: false,
            })
        })
        .map(|_| ())
    }

    pub fn list_registrations(
        &self,
        instance_id: &str,
        key: Option<&str>,
        mut q: RegistrationQuery,
    ) -> Result<(Vec<Registration>, u64)> {
        if let Some(id) = key {
            q.key_id = Some(self.resolve_key(instance_id, id)?.id);
        }
        self.store
            .list_registrations(instance_id, &q)
            .map_err(store_err)
    }

    fn registration_key(&self, instance_id: &str, id: &str) -> Result<KeyRecord> {
        let key = self.resolve_key(instance_id, id)?;
        if key.extractable {
            return Err(Error::new(
                Reason::KeyRootReqReg,
                "Registrations can only be made with a root key",
            ));
        }
        if key.state_at(self.now()) != KeyState::Active {
            return Err(Error::new(
                Reason::KeyInvalidState,
                "Registrations can only be made with an active key",
            ));
        }
        Ok(key)
    }

    fn registration_version(
        &self,
        key: &KeyRecord,
        version_id: Option<&str>,
    ) -> Result<VersionRef> {
        match version_id {
            None => Ok(key.current_version.clone()),
            Some(v) if v == key.current_version.id => Ok(key.current_version.clone()),
            Some(_) => Err(Error::new(
                Reason::KeyVersionInvalid,
                "The key version must be the key's latest version",
            )),
        }
    }

    pub fn create_registration(
        &self,
        instance_id: &str,
        id: &str,
        crn: &str,
        by: &Principal,
        input: RegistrationInput,
    ) -> Result<Registration> {
        validate::crn(crn)?;
        let key = self.registration_key(instance_id, id)?;
        if self
            .store
            .get_registration(instance_id, &key.id, crn)
            .map_err(store_err)?
            .is_some()
        {
            return Err(Error::new(
                Reason::DuplicateResource,
                "The registration already exists",
            ));
        }
        let now = self.now();
        let reg = Registration {
            instance_id: instance_id.into(),
            key_id: key.id.clone(),
            resource_crn: crn.into(),
            description: input.description,
            registration_metadata: input.registration_metadata,
            prevent_key_deletion: input.prevent_key_deletion.unwrap_or(false),
            key_version: self.registration_version(&key, input.key_version_id.as_deref())?,
            created_at: now,
            created_by: by.id.clone(),
            updated_at: now,
            updated_by: by.id.clone(),
        };
        self.store.put_registration(&reg).map_err(store_err)?;
        Ok(reg)
    }

    /// PATCH (`replace == false`) changes the given fields of an existing
    /// registration; PUT replaces it, creating it when absent.
    pub fn write_registration(
        &self,
        instance_id: &str,
        id: &str,
        crn: &str,
        by: &Principal,
        input: RegistrationInput,
        replace: bool,
    ) -> Result<Registration> {
        validate::crn(crn)?;
        let key = self.registration_key(instance_id, id)?;
        let existing = self
            .store
            .get_registration(instance_id, &key.id, crn)
            .map_err(store_err)?;
        let Some(mut reg) = existing else {
            return if replace {
                self.create_registration(instance_id, id, crn, by, input)
            } else {
                Err(registration_not_found())
            };
        };
        if replace || input.prevent_key_deletion.is_some() {
            reg.prevent_key_deletion = input.prevent_key_deletion.unwrap_or(false);
        }
        if replace || input.description.is_some() {
            reg.description = input.description;
        }
        if replace || input.registration_metadata.is_some() {
            reg.registration_metadata = input.registration_metadata;
        }
        if replace || input.key_version_id.is_some() {
            reg.key_version = self.registration_version(&key, input.key_version_id.as_deref())?;
        }
        reg.updated_at = self.now();
        reg.updated_by = by.id.clone();
        self.store.put_registration(&reg).map_err(store_err)?;
        Ok(reg)
    }

    pub fn delete_registration(&self, instance_id: &str, id: &str, crn: &str) -> Result<()> {
        let key = self.resolve_key(instance_id, id)?;
        self.store
            .delete_registration(instance_id, &key.id, crn)
            .map_err(|e| match e {
                StoreError::NotFound => registration_not_found(),
                other => store_err(other),
            })
    }
}
