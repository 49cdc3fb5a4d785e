//! Service rules against a real in-memory SQLite store and the software unit.

use std::sync::Arc;

use keyhold_core::model::{Instance, KeyState};
use keyhold_core::rules::TimingRules;
use keyhold_core::Reason;
use keyhold_crypto::SoftUnit;
use keyhold_store::SqliteStore;
use zeroize::Zeroizing;

use super::{CreateKey, Service};
use crate::auth::{Principal, PrincipalKind};

fn service(rules: TimingRules) -> Service {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let unit = Arc::new(SoftUnit::new(Zeroizing::new([5u8; 32]), 16));
    let svc = Service::new(store, unit, rules);
    svc.store
        .put_instance(&Instance::kms(
            "inst".into(),
            "i".into(),
            "acct".into(),
            "local".into(),
            1,
        ))
        .unwrap();
    svc
}

/// The error of a result whose success type deliberately has no `Debug` (it holds key material).
fn err<T>(r: keyhold_core::Result<T>) -> keyhold_core::Error {
    match r {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    }
}

fn fast() -> TimingRules {
    TimingRules {
        rotate_min_interval: 0,
        action_cooldown: 0,
        purge_delay: 0,
        ..TimingRules::default()
    }
}

fn user(id: &str) -> Principal {
    Principal {
        id: id.into(),
        kind: PrincipalKind::User,
        account_id: "acct".into(),
    }
}

fn root(svc: &Service, name: &str) -> String {
    let c = CreateKey {
        name: name.into(),
        description: None,
        tags: vec![],
        aliases: vec![],
        extractable: false,
        expiration: None,
        material: None,
        key_ring: None,
        overrides: None,
    };
    svc.create_key("inst", &user("u1"), c).unwrap().0.id
}

#[test]
fn wrap_rotate_unwrap_rewraps_with_the_newest_version() {
    let svc = service(fast());
    let id = root(&svc, "k1");
    let dek = Zeroizing::new(b"data key".to_vec());
    let wrapped = svc.wrap("inst", &id, Some(dek), &["ctx".into()]).unwrap();
    let rotated = svc.rotate("inst", &id, None).unwrap();
    let out = svc
        .unwrap("inst", &id, &wrapped.ciphertext, &["ctx".into()])
        .unwrap();
    assert_eq!(&out.plaintext[..], b"data key");
    let (again, newest) = out.rewrapped.expect("old ciphertext comes back rewrapped");
    assert_eq!(newest.id, rotated.current_version.id);
    let out = svc.unwrap("inst", &id, &again, &["ctx".into()]).unwrap();
    assert_eq!(&out.plaintext[..], b"data key");
    assert!(out.rewrapped.is_none());
    let wrong_aad = err(svc.unwrap("inst", &id, &again, &["other".into()]));
    assert_eq!(wrong_aad.reason, Reason::UnprocessableCiphertext);
}

#[test]
fn a_ciphertext_only_unwraps_with_its_own_key() {
    let svc = service(fast());
    let a = root(&svc, "ka");
    let b = root(&svc, "kb");
    let wrapped = svc.wrap("inst", &a, None, &[]).unwrap();
    assert_eq!(
        err(svc.unwrap("inst", &b, &wrapped.ciphertext, &[])).reason,
        Reason::UnprocessableCiphertext
    );
}

#[test]
fn disable_stops_wrap_and_enable_restores_it() {
    let svc = service(fast());
    let id = root(&svc, "k1");
    svc.disable("inst", &id).unwrap();
    assert_eq!(
        err(svc.wrap("inst", &id, None, &[])).reason,
        Reason::KeyActionInvalidState
    );
    svc.enable("inst", &id).unwrap();
    svc.wrap("inst", &id, None, &[]).unwrap();
}

#[test]
fn dual_authorization_needs_a_second_principal() {
    let svc = service(fast());
    let id = root(&svc, "k1");
    svc.set_key_policies(
        "inst",
        &id,
        &user("u1"),
        &[super::KeyPolicyInput::DualAuthDelete {
            enabled: Some(true),
        }],
    )
    .unwrap();
    assert_eq!(
        svc.delete_key("inst", &id, &user("u1"), false)
            .unwrap_err()
            .reason,
        Reason::AuthorizationsNotMet
    );
    svc.set_for_deletion("inst", &id, &user("u1"), true)
        .unwrap();
    assert_eq!(
        svc.delete_key("inst", &id, &user("u1"), false)
            .unwrap_err()
            .reason,
        Reason::AuthorizationsNotMet
    );
    let deleted = svc.delete_key("inst", &id, &user("u2"), false).unwrap();
    assert_eq!(deleted.state, KeyState::Destroyed);
    assert_eq!(
        svc.delete_key("inst", &id, &user("u2"), false)
            .unwrap_err()
            .reason,
        Reason::KeyDeleted
    );
}

#[test]
fn concurrent_rotations_never_duplicate_a_version() {
    let svc = Arc::new(service(fast()));
    let id = root(&svc, "k1");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let svc = svc.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                (0..5)
                    .filter(|_| svc.rotate("inst", &id, None).is_ok())
                    .count()
            })
        })
        .collect();
    let succeeded: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let versions = svc.key_versions("inst", &id, false).unwrap();
    assert_eq!(versions.len(), succeeded + 1);
    let mut ids: Vec<_> = versions.iter().map(|v| v.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), versions.len());
}

#[test]
fn the_hourly_rotation_rule_holds_under_default_rules() {
    let svc = service(TimingRules::default());
    let id = root(&svc, "k1");
    svc.rotate("inst", &id, None).unwrap();
    assert_eq!(
        svc.rotate("inst", &id, None).unwrap_err().reason,
        Reason::KeyRotationNotPermitted
    );
}

/// A store that counts the reads the hot path must not make.
struct CountingStore {
    inner: SqliteStore,
    reads: std::sync::atomic::AtomicUsize,
}

impl CountingStore {
    fn read(&self) {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

macro_rules! forward {
    ($($name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret { self.inner.$name($($arg),*) })*
    };
}

impl keyhold_store::Store for CountingStore {
    fn get_key(
        &self,
        i: &str,
        k: &str,
    ) -> keyhold_store::Result<Option<keyhold_core::model::KeyRecord>> {
        self.read();
        self.inner.get_key(i, k)
    }
    fn versions(
        &self,
        i: &str,
        k: &str,
    ) -> keyhold_store::Result<Vec<keyhold_core::model::KeyVersion>> {
        self.read();
        self.inner.versions(i, k)
    }
    fn key_id_for_alias(&self, i: &str, a: &str) -> keyhold_store::Result<Option<String>> {
        self.read();
        self.inner.key_id_for_alias(i, a)
    }
    fn list_instances(&self) -> keyhold_store::Result<Vec<Instance>> {
        self.read();
        self.inner.list_instances()
    }
    fn list_authorizations(
        &self,
    ) -> keyhold_store::Result<Vec<keyhold_core::resource::Authorization>> {
        self.read();
        self.inner.list_authorizations()
    }
    forward! {
        create_instance(&self, instance: &Instance) -> keyhold_store::Result<()>;
        update_instance(&self, instance: &Instance) -> keyhold_store::Result<()>;
        delete_instance(&self, id: &str) -> keyhold_store::Result<()>;
        create_authorization(&self, a: &keyhold_core::resource::Authorization) -> keyhold_store::Result<()>;
        delete_authorization(&self, id: &str) -> keyhold_store::Result<()>;
        ping(&self) -> keyhold_store::Result<()>;
        pool_status(&self) -> keyhold_store::PoolStatus;
        put_instance(&self, instance: &Instance) -> keyhold_store::Result<()>;
        get_instance(&self, id: &str) -> keyhold_store::Result<Option<Instance>>;
        put_api_key(&self, key: &keyhold_store::ApiKeyRecord) -> keyhold_store::Result<()>;
        find_api_key(&self, hash: &[u8]) -> keyhold_store::Result<Option<keyhold_store::ApiKeyRecord>>;
        list_api_keys(&self, account_id: &str) -> keyhold_store::Result<Vec<keyhold_store::ApiKeyRecord>>;
        get_api_key(&self, account_id: &str, id: &str) -> keyhold_store::Result<Option<keyhold_store::ApiKeyRecord>>;
        delete_api_key(&self, account_id: &str, id: &str) -> keyhold_store::Result<()>;
        replace_api_key_hash(&self, account_id: &str, id: &str, hash: &[u8]) -> keyhold_store::Result<()>;
        insert_iam_object(&self, obj: &keyhold_store::IamObject) -> keyhold_store::Result<()>;
        get_iam_object(&self, account_id: &str, kind: &str, id: &str) -> keyhold_store::Result<Option<keyhold_store::IamObject>>;
        list_iam_objects(&self, account_id: &str, kind: &str) -> keyhold_store::Result<Vec<keyhold_store::IamObject>>;
        delete_iam_object(&self, account_id: &str, kind: &str, id: &str) -> keyhold_store::Result<()>;
        get_setting(&self, name: &str) -> keyhold_store::Result<Option<Vec<u8>>>;
        put_setting(&self, name: &str, value: &[u8]) -> keyhold_store::Result<()>;
        put_setting_if_absent(&self, name: &str, value: &[u8]) -> keyhold_store::Result<Vec<u8>>;
        replace_setting_if(&self, name: &str, expected: Option<&[u8]>, value: &[u8]) -> keyhold_store::Result<bool>;
        insert_key(&self, key: &keyhold_core::model::KeyRecord, version: &keyhold_core::model::KeyVersion) -> keyhold_store::Result<()>;
        update_key(&self, key: &keyhold_core::model::KeyRecord, new_version: Option<&keyhold_core::model::KeyVersion>) -> keyhold_store::Result<()>;
        update_key_alias(&self, key: &keyhold_core::model::KeyRecord, alias: &str, add: bool) -> keyhold_store::Result<()>;
        purge_key(&self, instance_id: &str, key_id: &str) -> keyhold_store::Result<()>;
        list_keys(&self, instance_id: &str, query: &keyhold_core::list::ListKeys, now: i64) -> keyhold_store::Result<Vec<keyhold_core::model::KeyRecord>>;
        count_keys(&self, instance_id: &str, query: &keyhold_core::list::ListKeys, now: i64) -> keyhold_store::Result<u64>;
        deleted_before(&self, before: i64, limit: u32) -> keyhold_store::Result<Vec<(String, String)>>;
        create_ring(&self, ring: &keyhold_core::model::KeyRing) -> keyhold_store::Result<()>;
        get_ring(&self, instance_id: &str, ring_id: &str) -> keyhold_store::Result<Option<keyhold_core::model::KeyRing>>;
        list_rings(&self, instance_id: &str) -> keyhold_store::Result<Vec<keyhold_core::model::KeyRing>>;
        delete_ring(&self, instance_id: &str, ring_id: &str, force: bool) -> keyhold_store::Result<()>;
        put_registration(&self, reg: &keyhold_core::model::Registration) -> keyhold_store::Result<()>;
        get_registration(&self, instance_id: &str, key_id: &str, crn: &str) -> keyhold_store::Result<Option<keyhold_core::model::Registration>>;
        delete_registration(&self, instance_id: &str, key_id: &str, crn: &str) -> keyhold_store::Result<()>;
        list_registrations(&self, instance_id: &str, query: &keyhold_store::RegistrationQuery) -> keyhold_store::Result<(Vec<keyhold_core::model::Registration>, u64)>;
        put_instance_policies(&self, instance_id: &str, policies: &[keyhold_core::model::InstancePolicy]) -> keyhold_store::Result<()>;
        instance_policies(&self, instance_id: &str) -> keyhold_store::Result<Vec<keyhold_core::model::InstancePolicy>>;
        put_import_token(&self, token: &keyhold_core::model::ImportToken) -> keyhold_store::Result<()>;
        get_import_token(&self, instance_id: &str) -> keyhold_store::Result<Option<keyhold_core::model::ImportToken>>;
        retrieve_import_token(&self, instance_id: &str) -> keyhold_store::Result<Option<(keyhold_core::model::ImportToken, bool)>>;
    }
}

#[test]
fn a_cached_key_wraps_and_unwraps_without_reading_the_store() {
    let store = Arc::new(CountingStore {
        inner: SqliteStore::open_in_memory().unwrap(),
        reads: Default::default(),
    });
    let unit = Arc::new(SoftUnit::new(Zeroizing::new([5u8; 32]), 16));
    let svc = Service::new(store.clone(), unit, fast());
    let id = root(&svc, "k1");
    let first = svc.wrap("inst", &id, None, &[]).unwrap();
    let before = store.reads.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..10 {
        let w = svc.wrap("inst", &id, None, &[]).unwrap();
        svc.unwrap("inst", &id, &w.ciphertext, &[]).unwrap();
    }
    svc.unwrap("inst", &id, &first.ciphertext, &[]).unwrap();
    assert_eq!(
        store.reads.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "cache hits must not read the store"
    );
    // A write invalidates: the next wrap reads the key once more.
    svc.disable("inst", &id).unwrap();
    svc.enable("inst", &id).unwrap();
    let before = store.reads.load(std::sync::atomic::Ordering::SeqCst);
    svc.wrap("inst", &id, None, &[]).unwrap();
    assert!(store.reads.load(std::sync::atomic::Ordering::SeqCst) > before);
}

#[test]
fn the_directory_is_read_once_and_reloaded_after_a_change() {
    use keyhold_core::resource::Party;
    let store = Arc::new(CountingStore {
        inner: SqliteStore::open_in_memory().unwrap(),
        reads: Default::default(),
    });
    let unit = Arc::new(SoftUnit::new(Zeroizing::new([5u8; 32]), 16));
    let svc = Service::new(store.clone(), unit, fast());
    let admin = crate::auth::Principal {
        id: "admin".into(),
        kind: crate::auth::PrincipalKind::User,
        account_id: "acct".into(),
    };
    let input = |service: &str, crypto: Option<String>| super::InstanceInput {
        name: "n".into(),
        service: service.into(),
        plan: None,
        region: None,
        units: None,
        crypto_instance: crypto,
    };
    let hs = svc
        .create_instance(&admin, input("hs-crypto", None))
        .unwrap();
    let kms = svc
        .create_instance(&admin, input("kms", Some(hs.id.clone())))
        .unwrap();
    let dir = svc.directory().unwrap();
    assert!(!dir.crypto_authorized(&kms));
    let reads = || store.reads.load(std::sync::atomic::Ordering::SeqCst);
    let before = reads();
    for _ in 0..5 {
        assert!(svc.cached_directory().is_some());
        svc.directory().unwrap();
    }
    assert_eq!(reads(), before, "a current directory is not read again");
    let party = |s: &str, i: &str| Party {
        service_name: s.into(),
        instance_id: Some(i.into()),
    };
    svc.create_authorization(
        &admin,
        party("kms", &kms.id),
        party("hs-crypto", &hs.id),
        vec!["Reader".into()],
    )
    .unwrap();
    assert!(
        svc.cached_directory().is_none(),
        "a write drops the snapshot"
    );
    assert!(svc.directory().unwrap().crypto_authorized(&kms));
    // The bound crypto instance cannot go; nothing changed.
    assert_eq!(
        svc.delete_instance(&hs, false).unwrap_err().reason,
        keyhold_core::Reason::InstanceInUse
    );
    assert!(svc.directory().unwrap().instance(&hs.id).is_some());
}
