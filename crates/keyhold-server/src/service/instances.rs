//! The resource controller: service instances (kms, hs-crypto, any other
//! service), their credentials, and service-to-service authorizations. Who
//! may call these is the api layer's platform-role check; here are the rules.

use std::sync::Arc;

use keyhold_core::model::{Instance, InstanceState};
use keyhold_core::resource::{
    service_instance_principal, service_role, valid_service_name, Authorization, Party, MAX_UNITS,
    SERVICE_HS_CRYPTO, SERVICE_KMS,
};
use keyhold_core::validate::is_uuid;
use keyhold_core::{Error, Reason, Result};
use keyhold_store::{ApiKeyRecord, StoreError};
use zeroize::Zeroizing;

use super::directory::Directory;
use super::{store_err, Service};
use crate::auth::{apikey, Principal};

/// What `POST /v2/resource_instances` asks for, parsed.
pub struct InstanceInput {
    pub name: String,
    pub service: String,
    /// `standard` or `dedicated` when named.
    pub plan: Option<String>,
    pub region: Option<String>,
    pub units: Option<u32>,
    /// A crypto instance's guid or CRN.
    pub crypto_instance: Option<String>,
}

/// What `PATCH /v2/resource_instances/{id}` may change.
pub struct InstanceUpdate {
    pub name: Option<String>,
    pub units: Option<u32>,
}

/// A new credential: its record and the API key, shown once.
pub struct Credential {
    pub record: ApiKeyRecord,
    pub apikey: Zeroizing<String>,
}

pub const DEFAULT_REGION: &str = "local";

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 180 || name.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            "name",
            "1 to 180 characters, no control characters",
        ));
    }
    Ok(())
}

fn check_units(units: u32) -> Result<()> {
    if !(1..=MAX_UNITS).contains(&units) {
        return Err(Error::invalid_field(
            "units",
            &format!("a number of crypto units from 1 to {MAX_UNITS}"),
        ));
    }
    Ok(())
}

/// An instance guid, or the guid inside an instance CRN.
pub fn instance_guid(id: &str) -> Option<String> {
    let guid = match id.strip_prefix("crn:v1:") {
        Some(rest) => rest.split(':').nth(5)?,
        None => id,
    };
    is_uuid(guid).then(|| guid.to_ascii_lowercase())
}

fn in_use(message: String) -> Error {
    Error::new(Reason::InstanceInUse, message)
}

impl Service {
    /// The directory, from this node's memory when current (never blocks then).
    pub fn cached_directory(&self) -> Option<Arc<Directory>> {
        self.directory.fresh()
    }

    /// The last directory loaded (see [`super::directory::DirectoryCache::latest`]).
    pub fn latest_directory(&self) -> Option<Arc<Directory>> {
        self.directory.latest()
    }

    /// The directory, loaded from the store unless this node holds a current one.
    pub fn directory(&self) -> Result<Arc<Directory>> {
        if let Some(d) = self.directory.fresh() {
            return Ok(d);
        }
        let generation = self.directory.generation();
        let instances = self.store.list_instances().map_err(store_err)?;
        let authorizations = self.store.list_authorizations().map_err(store_err)?;
        let dir = Arc::new(Directory::new(instances, authorizations));
        self.directory.put(dir.clone(), generation);
        Ok(dir)
    }

    /// An instance of the caller's account, by guid or CRN (404 otherwise).
    pub fn account_instance(&self, account_id: &str, id: &str) -> Result<Arc<Instance>> {
        let not_found = || Error::new(Reason::NotFound, "No such service instance");
        let guid = instance_guid(id).ok_or_else(not_found)?;
        self.directory()?
            .instance(&guid)
            .filter(|i| i.account_id == account_id)
            .cloned()
            .ok_or_else(not_found)
    }

    pub fn create_instance(&self, principal: &Principal, input: InstanceInput) -> Result<Instance> {
        check_name(&input.name)?;
        if !valid_service_name(&input.service) {
            return Err(Error::invalid_field(
                "resource_plan_id",
                "a known plan id (hs-crypto-standard, kms-standard, kms-dedicated) or a service name of lower-case letters, digits and -",
            ));
        }
        let region = input.region.unwrap_or_else(|| DEFAULT_REGION.into());
        if !valid_service_name(&region) {
            return Err(Error::invalid_field(
                "target",
                "a region name of lower-case letters, digits and -",
            ));
        }
        let mut units = None;
        let mut crypto_instance = None;
        match input.service.as_str() {
            SERVICE_HS_CRYPTO => {
                if input.crypto_instance.is_some() {
                    return Err(Error::invalid_field(
                        "crypto_instance",
                        "absent for hs-crypto (a crypto instance is bound to nothing)",
                    ));
                }
                if input.plan.as_deref().is_some_and(|p| p != "standard") {
                    return Err(Error::invalid_field("plan", "standard for hs-crypto"));
                }
                let n = input.units.unwrap_or(1);
                check_units(n)?;
                units = Some(n);
            }
            SERVICE_KMS => {
                if input.units.is_some() {
                    return Err(Error::invalid_field(
                        "units",
                        "absent for kms (crypto units belong to the hs-crypto instance)",
                    ));
                }
                match (input.plan.as_deref(), &input.crypto_instance) {
                    (Some("dedicated") | None, Some(c)) => {
                        let crypto = self
                            .account_instance(&principal.account_id, c)
                            .ok()
                            .filter(|i| {
                                i.service == SERVICE_HS_CRYPTO && i.state == InstanceState::Active
                            })
                            .ok_or_else(|| {
                                Error::invalid_field(
                                    "crypto_instance",
                                    "the id or CRN of an hs-crypto instance of this account",
                                )
                            })?;
                        crypto_instance = Some(crypto.id.clone());
                    }
                    (Some("standard") | None, None) => {}
                    (Some("dedicated"), None) => {
                        return Err(Error::invalid_field(
                            "crypto_instance",
                            "the hs-crypto instance a dedicated kms instance uses",
                        ))
                    }
                    (Some("standard"), Some(_)) => return Err(Error::invalid_field(
                        "crypto_instance",
                        "absent on the standard plan (the shared crypto unit); use plan dedicated",
                    )),
                    _ => return Err(Error::invalid_field("plan", "standard or dedicated")),
                }
            }
            _ => {
                if input.units.is_some() || input.crypto_instance.is_some() {
                    return Err(Error::invalid_field("parameters", "empty for this service (units and crypto_instance are for hs-crypto and kms)"));
                }
                if input.plan.as_deref().is_some_and(|p| p != "standard") {
                    return Err(Error::invalid_field("plan", "standard"));
                }
            }
        }
        let now = self.now();
        let mut instance = Instance::kms(
            Self::new_id(),
            input.name,
            principal.account_id.clone(),
            region,
            now,
        );
        instance.service = input.service;
        instance.units = units;
        instance.crypto_instance = crypto_instance;
        instance.created_by = principal.id.clone();
        let created = self.store.create_instance(&instance);
        self.directory.clear();
        match created {
            Ok(()) => Ok(instance),
            // The crypto instance was deleted meanwhile.
            Err(StoreError::NotFound) => Err(Error::invalid_field(
                "crypto_instance",
                "the id or CRN of an hs-crypto instance of this account",
            )),
            Err(e) => Err(store_err(e)),
        }
    }

    pub fn update_instance(&self, current: &Instance, update: InstanceUpdate) -> Result<Instance> {
        let mut instance = current.clone();
        if let Some(name) = update.name {
            check_name(&name)?;
            instance.name = name;
        }
        if let Some(units) = update.units {
            if instance.service != SERVICE_HS_CRYPTO {
                return Err(Error::invalid_field(
                    "units",
                    "absent: only hs-crypto instances have crypto units",
                ));
            }
            check_units(units)?;
            instance.units = Some(units);
        }
        instance.updated_at = self.now();
        let written = self.store.update_instance(&instance);
        self.directory.clear();
        written.map_err(store_err)?;
        Ok(instance)
    }

    /// Deletes an instance. A crypto instance a kms instance is bound to is
    /// refused (409, nothing changed). A kms instance still holding keys is
    /// refused unless `force`, which keeps the keys in the store and leaves the
    /// instance `pending_reclamation`: unusable, nothing destroyed — as a real
    /// KMS keeps a deleted instance's keys for a reclamation period.
    pub fn delete_instance(&self, instance: &Instance, force: bool) -> Result<Option<Instance>> {
        let dir = self.directory()?;
        let users: Vec<&str> = dir
            .instances
            .values()
            .filter(|i| i.crypto_instance.as_deref() == Some(instance.id.as_str()))
            .map(|i| i.id.as_str())
            .collect();
        if !users.is_empty() {
            return Err(in_use(format!(
                "The crypto instance {} is used by the key-management instance(s) {}; delete them first",
                instance.id,
                users.join(", ")
            )));
        }
        let deleted = self.store.delete_instance(&instance.id);
        self.directory.clear();
        match deleted {
            Ok(()) => {
                self.policy_cache.forget(&instance.id);
                Ok(None)
            }
            Err(StoreError::NotEmpty) if force && instance.service == SERVICE_KMS => {
                let mut reclaimed = instance.clone();
                reclaimed.state = InstanceState::PendingReclamation;
                reclaimed.updated_at = self.now();
                let written = self.store.update_instance(&reclaimed);
                self.directory.clear();
                written.map_err(store_err)?;
                Ok(Some(reclaimed))
            }
            Err(StoreError::NotEmpty) if instance.service == SERVICE_KMS => Err(in_use(format!(
                "The key-management instance {} still holds keys; delete them first, or delete the instance with force=true (it is kept pending reclamation with its keys)",
                instance.id
            ))),
            Err(StoreError::NotEmpty) => Err(in_use(format!(
                "The instance {} is in use (a key-management instance was just bound to it)",
                instance.id
            ))),
            Err(StoreError::NotFound) => Err(Error::new(Reason::NotFound, "No such service instance")),
            Err(e) => Err(store_err(e)),
        }
    }

    /// A credential for a service instance: an API key whose principal is the
    /// instance itself (kind `service`), what it presents to call Keyhold.
    pub fn create_credential(&self, source: &Instance, name: &str) -> Result<Credential> {
        check_name(name)?;
        let secret = apikey::generate()?;
        let record = ApiKeyRecord {
            hash: apikey::hash(&secret),
            id: Self::new_id(),
            principal_id: service_instance_principal(source),
            principal_kind: "service".into(),
            account_id: source.account_id.clone(),
            name: name.to_string(),
            created_at: self.now(),
        };
        self.store.put_api_key(&record).map_err(store_err)?;
        Ok(Credential {
            record,
            apikey: secret,
        })
    }

    pub fn create_authorization(
        &self,
        principal: &Principal,
        source: Party,
        target: Party,
        roles: Vec<String>,
    ) -> Result<Authorization> {
        let check_party = |p: &Party, field: &'static str| -> Result<Party> {
            if !valid_service_name(&p.service_name) {
                return Err(Error::invalid_field(field, "{service_name, instance_id?} with a service name of lower-case letters, digits and -"));
            }
            let instance_id = match &p.instance_id {
                None => None,
                Some(id) => {
                    let i = self
                        .account_instance(&principal.account_id, id)
                        .ok()
                        .filter(|i| i.service == p.service_name)
                        .ok_or_else(|| {
                            Error::invalid_field(
                                field,
                                "an instance_id naming an instance of service_name in this account",
                            )
                        })?;
                    Some(i.id.clone())
                }
            };
            Ok(Party {
                service_name: p.service_name.clone(),
                instance_id,
            })
        };
        let source = check_party(&source, "source")?;
        let target = check_party(&target, "target")?;
        if target.service_name != SERVICE_KMS && target.service_name != SERVICE_HS_CRYPTO {
            return Err(Error::invalid_field(
                "target",
                "a kms or hs-crypto service (or one of its instances)",
            ));
        }
        if source.service_name == target.service_name && source.instance_id == target.instance_id {
            return Err(Error::invalid_field(
                "target",
                "another service or instance than the source",
            ));
        }
        if roles.is_empty() || roles.len() > 4 || roles.iter().any(|r| service_role(r).is_none()) {
            return Err(Error::invalid_field(
                "roles",
                "a list of service roles among Reader, ReaderPlus, Writer, Manager",
            ));
        }
        let a = Authorization {
            id: Self::new_id(),
            account_id: principal.account_id.clone(),
            source,
            target,
            roles,
            created_at: self.now(),
            created_by: principal.id.clone(),
        };
        let created = self.store.create_authorization(&a);
        self.directory.clear();
        created.map_err(store_err)?;
        Ok(a)
    }

    /// The account's authorizations (newest snapshot).
    pub fn authorizations(&self, account_id: &str) -> Result<Vec<Authorization>> {
        Ok(self
            .directory()?
            .authorizations
            .iter()
            .filter(|a| a.account_id == account_id)
            .cloned()
            .collect())
    }

    pub fn authorization(&self, account_id: &str, id: &str) -> Result<Authorization> {
        self.authorizations(account_id)?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| Error::new(Reason::NotFound, "No such authorization"))
    }

    pub fn delete_authorization(&self, account_id: &str, id: &str) -> Result<()> {
        let a = self.authorization(account_id, id)?;
        let deleted = self.store.delete_authorization(&a.id);
        self.directory.clear();
        match deleted {
            Ok(()) => Ok(()),
            // Deleted meanwhile by another request.
            Err(StoreError::NotFound) => Err(Error::new(Reason::NotFound, "No such authorization")),
            Err(e) => Err(store_err(e)),
        }
    }
}
