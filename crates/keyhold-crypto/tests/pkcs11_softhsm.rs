//! Pkcs11Unit against a real SoftHSM2 token. These tests are `#[ignore]`d so that
//! `cargo test` runs without an HSM; `scripts/test` runs them with `--ignored`
//! after `scripts/install-test-deps` has set up the token, and they FAIL (never
//! skip) when the token is missing.
//!
//! Environment: SOFTHSM2_CONF (default `.deps/softhsm/softhsm2.conf` of the
//! repository), KEYHOLD_PKCS11_MODULE (default /usr/lib/softhsm/libsofthsm2.so),
//! KEYHOLD_PKCS11_TOKEN (default keyhold-test), KEYHOLD_PKCS11_PIN_FILE (default
//! `.deps/softhsm/pin`). One unit (one C_Initialize) serves the whole binary.

use std::path::{Path, PathBuf};
use std::sync::{OnceLock, RwLock};

use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use keyhold_crypto::{
    pkcs11_context, Binding, CryptoError, CryptoUnit, Pkcs11Config, Pkcs11Unit, Purpose, SoftUnit,
};
use zeroize::Zeroizing;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_or(name: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(name).map_or(default, PathBuf::from)
}

fn module() -> PathBuf {
    env_or(
        "KEYHOLD_PKCS11_MODULE",
        PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
    )
}

fn token() -> String {
    std::env::var("KEYHOLD_PKCS11_TOKEN").unwrap_or_else(|_| "keyhold-test".into())
}

fn pin() -> Zeroizing<String> {
    let path = env_or("KEYHOLD_PKCS11_PIN_FILE", repo().join(".deps/softhsm/pin"));
    let pin = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no SoftHSM PIN at {} ({e}); run scripts/install-test-deps",
            path.display()
        )
    });
    Zeroizing::new(pin.trim_end().to_string())
}

/// Tests that log the token out take this exclusively; the others share it.
static SERIAL: RwLock<()> = RwLock::new(());

fn unit() -> &'static Pkcs11Unit {
    static UNIT: OnceLock<Pkcs11Unit> = OnceLock::new();
    UNIT.get_or_init(|| {
        if std::env::var_os("SOFTHSM2_CONF").is_none() {
            std::env::set_var("SOFTHSM2_CONF", repo().join(".deps/softhsm/softhsm2.conf"));
        }
        Pkcs11Unit::open(Pkcs11Config {
            module: module(),
            token_label: token(),
            pin: pin(),
            master_label: keyhold_crypto::DEFAULT_MASTER_LABEL.into(),
            mac_label: keyhold_crypto::DEFAULT_MAC_LABEL.into(),
            create_keys: true,
            sessions: 2,
            cache_entries: 64,
        })
        .unwrap_or_else(|e| {
            panic!("cannot open the SoftHSM token (run scripts/install-test-deps): {e}")
        })
    })
}

/// A session of our own on the unit's context (the same C_Initialize).
fn inspector() -> Session {
    let _ = unit();
    let ctx = pkcs11_context(&module()).expect("context");
    let slot = ctx
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .is_ok_and(|t| t.label().trim_end() == token())
        })
        .expect("token slot");
    let s = ctx.open_rw_session(slot).expect("session");
    match s.login(UserType::User, Some(&AuthPin::new(pin().to_string()))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    s
}

fn b<'a>(purpose: Purpose, obj: &'a str, ver: &'a str) -> Binding<'a> {
    Binding {
        purpose,
        instance_id: "inst",
        object_id: obj,
        version_id: ver,
    }
}

fn root<'a>(obj: &'a str, ver: &'a str) -> Binding<'a> {
    b(Purpose::RootKey, obj, ver)
}

fn uniq(p: &str) -> String {
    let mut r = [0u8; 8];
    aws_lc_rs::rand::fill(&mut r).unwrap();
    format!(
        "{p}-{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn flags(s: &Session, h: ObjectHandle) -> (bool, bool, bool, bool) {
    let attrs = s
        .get_attributes(
            h,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .expect("attributes");
    let (mut sens, mut ext, mut always, mut never) = (false, true, false, false);
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => sens = v,
            Attribute::Extractable(v) => ext = v,
            Attribute::AlwaysSensitive(v) => always = v,
            Attribute::NeverExtractable(v) => never = v,
            _ => {}
        }
    }
    (sens, ext, always, never)
}

fn value_is_unreadable(s: &Session, h: ObjectHandle) -> bool {
    match s.get_attributes(h, &[AttributeType::Value]) {
        Err(_) => true,
        // cryptoki drops attributes the token reports as unavailable.
        Ok(v) => !v.iter().any(|a| matches!(a, Attribute::Value(_))),
    }
}

#[test]
#[ignore = "needs SoftHSM2 (scripts/test runs it)"]
fn master_mac_and_root_key_objects_are_sensitive_and_not_extractable() {
    let _g = SERIAL.read().unwrap();
    let u = unit();
    let (k1, k2, k3) = (uniq("k"), uniq("k"), uniq("k"));
    let (v1, v2, v3) = (uniq("v"), uniq("v"), uniq("v"));
    let blob1 = u.generate_wrapped(&root(&k1, &v1), 32).unwrap();
    let blob2 = u.wrap_material(&root(&k2, &v2), &[7u8; 32]).unwrap();
    let blob3 = u.wrap_material(&root(&k3, &v3), &[8u8; 16]).unwrap();
    for (k, v, blob) in [(&k1, &v1, &blob1), (&k2, &v2, &blob2), (&k3, &v3, &blob3)] {
        u.encrypt_dek(&root(k, v), blob, &[0; 12], b"", b"dek")
            .unwrap();
    }
    let s = inspector();
    for label in ["keyhold-master", "keyhold-mac"] {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap();
        assert!(!found.is_empty(), "{label} is missing from the token");
        for h in found {
            assert_eq!(
                flags(&s, h),
                (true, false, true, true),
                "{label} attributes"
            );
            assert!(value_is_unreadable(&s, h), "{label} CKA_VALUE was readable");
        }
    }
    // Every session secret key of this process: the unit's root-key objects
    // (temporary wrap objects are destroyed at once, so none should remain).
    let session_keys = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(false),
        ])
        .unwrap();
    assert!(
        session_keys.len() >= 3,
        "expected the three root keys as session objects, found {}",
        session_keys.len()
    );
    for h in session_keys {
        // (CKA_NEVER_EXTRACTABLE is false for any unwrapped key, by the standard.)
        let (sens, ext, _, _) = flags(&s, h);
        assert!(sens, "a root-key session object is not CKA_SENSITIVE");
        assert!(!ext, "a root-key session object is CKA_EXTRACTABLE");
        assert!(
            value_is_unreadable(&s, h),
            "a root-key CKA_VALUE was readable"
        );
    }
}

#[test]
#[ignore = "needs SoftHSM2 (scripts/test runs it)"]
fn dek_round_trip_and_errors() {
    let _g = SERIAL.read().unwrap();
    let u = unit();
    let (k, v) = (uniq("k"), uniq("v"));
    let blob = u.generate_wrapped(&root(&k, &v), 32).unwrap();
    assert_eq!(blob[0], 2, "format byte");
    let ct = u
        .encrypt_dek(&root(&k, &v), &blob, &[1; 12], b"aad", b"secret dek")
        .unwrap();
    assert_eq!(ct.len(), 10 + 16);
    u.forget(&v);
    assert_eq!(
        &u.decrypt_dek(&root(&k, &v), &blob, &[1; 12], b"aad", &ct)
            .unwrap()[..],
        b"secret dek"
    );
    assert_eq!(
        u.decrypt_dek(&root(&k, &v), &blob, &[1; 12], b"aaX", &ct)
            .unwrap_err(),
        CryptoError::Unauthentic
    );
    let mut bad = ct.clone();
    bad[0] ^= 1;
    assert_eq!(
        u.decrypt_dek(&root(&k, &v), &blob, &[1; 12], b"aad", &bad)
            .unwrap_err(),
        CryptoError::Unauthentic
    );
    assert_eq!(
        u.decrypt_dek(&root(&k, &v), &blob, &[1; 12], b"aad", &ct[..5])
            .unwrap_err(),
        CryptoError::Unauthentic
    );
    // Same bytes as the soft unit's AES-GCM: the HSM does standard GCM.
    let mut r = [0u8; 32];
    u.random(&mut r).unwrap();
    assert_ne!(r, [0u8; 32]);
}

#[test]
#[ignore = "needs SoftHSM2 (scripts/test runs it)"]
fn tampered_and_swapped_blobs_are_refused() {
    let _g = SERIAL.read().unwrap();
    let u = unit();
    let (ka, va, kb, vb) = (uniq("k"), uniq("v"), uniq("k"), uniq("v"));
    let blob_a = u.generate_wrapped(&root(&ka, &va), 32).unwrap();
    let blob_b = u.generate_wrapped(&root(&kb, &vb), 32).unwrap();
    // Warm the cache for B, then present A's blob as B's (a swapped row).
    u.encrypt_dek(&root(&kb, &vb), &blob_b, &[0; 12], b"", b"x")
        .unwrap();
    assert_eq!(
        u.encrypt_dek(&root(&kb, &vb), &blob_a, &[0; 12], b"", b"x")
            .unwrap_err(),
        CryptoError::BlobIntegrity
    );
    // Cold: A's blob under another key id.
    assert_eq!(
        u.encrypt_dek(&root(&kb, &uniq("v")), &blob_a, &[0; 12], b"", b"x")
            .unwrap_err(),
        CryptoError::BlobIntegrity
    );
    for i in [0, 1, 5, blob_a.len() - 1] {
        let mut t = blob_a.clone();
        t[i] ^= 1;
        assert_eq!(
            u.encrypt_dek(&root(&ka, &uniq("v")), &t, &[0; 12], b"", b"x")
                .unwrap_err(),
            CryptoError::BlobIntegrity,
            "flip at {i}"
        );
    }
    assert_eq!(
        u.encrypt_dek(&root(&ka, &va), &blob_a[..20], &[0; 12], b"", b"x")
            .unwrap_err(),
        CryptoError::BlobIntegrity
    );
    // A purpose change is a different binding too.
    assert_eq!(
        u.unwrap_material(&b(Purpose::StandardKey, &ka, &va), &blob_a)
            .unwrap_err(),
        CryptoError::BlobIntegrity
    );
    // The soft unit's blobs are not this unit's, and the other way round.
    let soft = SoftUnit::new(Zeroizing::new([9u8; 32]), 4);
    let soft_blob = soft.generate_wrapped(&root(&ka, &va), 32).unwrap();
    assert_eq!(
        u.encrypt_dek(&root(&ka, &uniq("v")), &soft_blob, &[0; 12], b"", b"x")
            .unwrap_err(),
        CryptoError::BlobIntegrity
    );
    assert_eq!(
        soft.encrypt_dek(&root(&ka, &va), &blob_a, &[0; 12], b"", b"x")
            .unwrap_err(),
        CryptoError::BlobIntegrity
    );
}

#[test]
#[ignore = "needs SoftHSM2 (scripts/test runs it)"]
fn material_sizes_and_root_keys_never_leave() {
    let _g = SERIAL.read().unwrap();
    let u = unit();
    for len in [16, 24, 32] {
        let (k, v) = (uniq("k"), uniq("v"));
        let blob = u.wrap_material(&root(&k, &v), &vec![3u8; len]).unwrap();
        let ct = u
            .encrypt_dek(&root(&k, &v), &blob, &[0; 12], b"", b"dek")
            .unwrap();
        // The HSM's GCM agrees with aws-lc's for the same key bytes.
        let soft_key = aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(
                match len {
                    16 => &aws_lc_rs::aead::AES_128_GCM,
                    24 => &aws_lc_rs::aead::AES_192_GCM,
                    _ => &aws_lc_rs::aead::AES_256_GCM,
                },
                &vec![3u8; len],
            )
            .unwrap(),
        );
        let mut buf = b"dek".to_vec();
        soft_key
            .seal_in_place_append_tag(
                aws_lc_rs::aead::Nonce::assume_unique_for_key([0; 12]),
                aws_lc_rs::aead::Aad::empty(),
                &mut buf,
            )
            .unwrap();
        assert_eq!(ct, buf, "GCM output for a {len}-byte key");
        assert!(u.unwrap_material(&root(&k, &v), &blob).is_err());
    }
    assert!(u.wrap_material(&root("k", "v"), &[1u8; 17]).is_err());
    assert!(u.wrap_material(&root("k", "v"), &[]).is_err());
    // Standard keys and secrets of any length come back as they went in.
    for len in [1, 7, 32, 100, 2400, 7500] {
        let material: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let bind = b(Purpose::StandardKey, "std", "v1");
        let blob = u.wrap_material(&bind, &material).unwrap();
        assert_eq!(&u.unwrap_material(&bind, &blob).unwrap()[..], &material[..]);
    }
    let bind = b(Purpose::StandardKey, "std", "v2");
    let blob = u.generate_wrapped(&bind, 32).unwrap();
    assert_eq!(u.unwrap_material(&bind, &blob).unwrap().len(), 32);
}

#[test]
#[ignore = "needs SoftHSM2 (scripts/test runs it)"]
fn import_token_oaep_sha256() {
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
    let _g = SERIAL.read().unwrap();
    let u = unit();
    let bind = b(Purpose::ImportTokenKey, "token", "1");
    let (pem, wrapped) = u.generate_import_key(&bind).unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let public = PublicEncryptingKey::from_der(&der).unwrap();
    let public = OaepPublicEncryptingKey::new(public).unwrap();
    let mut ct = vec![0u8; public.ciphertext_size()];
    let ct_len = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &[5u8; 32], &mut ct, None)
        .unwrap()
        .len();
    let plain = u.import_decrypt(&bind, &wrapped, &ct[..ct_len]).unwrap();
    assert_eq!(&plain[..], &[5u8; 32]);
    assert!(matches!(
        u.import_decrypt(&bind, &wrapped, &[1u8; 512]),
        Err(CryptoError::InvalidInput(_))
    ));
}

#[test]
#[ignore = "needs SoftHSM2 (scripts/test runs it)"]
fn forget_destroys_the_session_object() {
    let _g = SERIAL.write().unwrap();
    let u = unit();
    let s = inspector();
    let count = || {
        s.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(false),
        ])
        .unwrap()
        .len()
    };
    let (k, v) = (uniq("k"), uniq("v"));
    let blob = u.generate_wrapped(&root(&k, &v), 32).unwrap();
    u.encrypt_dek(&root(&k, &v), &blob, &[0; 12], b"", b"x")
        .unwrap();
    let before = count();
    u.forget(&v);
    assert_eq!(count(), before - 1);
}

#[test]
#[ignore = "needs SoftHSM2 (scripts/test runs it)"]
fn survives_a_dropped_login() {
    let _g = SERIAL.write().unwrap();
    let u = unit();
    let (k, v) = (uniq("k"), uniq("v"));
    let blob = u.generate_wrapped(&root(&k, &v), 32).unwrap();
    let ct = u
        .encrypt_dek(&root(&k, &v), &blob, &[3; 12], b"", b"before")
        .unwrap();
    // C_Logout ends the login of every session of this process.
    let s = inspector();
    s.logout().unwrap();
    drop(s);
    assert_eq!(
        &u.decrypt_dek(&root(&k, &v), &blob, &[3; 12], b"", &ct)
            .unwrap()[..],
        b"before"
    );
    let blob2 = u.generate_wrapped(&root(&k, &uniq("v")), 32).unwrap();
    assert_eq!(blob2[0], 2);
}
