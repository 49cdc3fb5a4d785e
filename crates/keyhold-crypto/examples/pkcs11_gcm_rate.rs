//! The in-process AES-GCM rate of a PKCS#11 token, for `scripts/bench-pkcs11`
//! (docs/benchmarks.md): how many single-part CKM_AES_GCM operations per second
//! one thread gets, alternating C_Encrypt and C_Decrypt of a DEK under an
//! AES-256 session key — raw cryptoki, then through `Pkcs11Unit` (the same calls
//! plus the handle cache and session pool, still without HTTP).
//!
//!   SOFTHSM2_CONF=.deps/softhsm/softhsm2.conf cargo run --release -p keyhold-crypto \
//!     --example pkcs11_gcm_rate -- MODULE TOKEN PIN_FILE [SECONDS] [DEK_BYTES]
//!
//! Prints one JSON object.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keyhold_crypto::{
    pkcs11_context, Binding, CryptoUnit, Pkcs11Config, Pkcs11Unit, Purpose, DEFAULT_MAC_LABEL,
    DEFAULT_MASTER_LABEL,
};
use zeroize::Zeroizing;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: pkcs11_gcm_rate MODULE TOKEN PIN_FILE [SECONDS] [DEK_BYTES]".into());
    }
    let module = PathBuf::from(&args[0]);
    let token = args[1].clone();
    let pin = std::fs::read_to_string(&args[2]).map_err(|e| format!("{}: {e}", args[2]))?;
    let pin = Zeroizing::new(pin.trim_end().to_string());
    let secs: f64 = args
        .get(3)
        .map_or(Ok(5.0), |s| s.parse())
        .map_err(|_| "SECONDS")?;
    let dek_len: usize = args
        .get(4)
        .map_or(Ok(32), |s| s.parse())
        .map_err(|_| "DEK_BYTES")?;
    let run_for = Duration::from_secs_f64(secs);
    let dek = vec![7u8; dek_len];

    // The unit first: it performs the one C_Initialize of this process.
    let unit = Pkcs11Unit::open(Pkcs11Config {
        module: module.clone(),
        token_label: token.clone(),
        pin: pin.clone(),
        master_label: DEFAULT_MASTER_LABEL.into(),
        mac_label: DEFAULT_MAC_LABEL.into(),
        create_keys: true,
        sessions: 1,
        cache_entries: 16,
    })?;

    // Raw cryptoki on a session of our own.
    let ctx = pkcs11_context(&module)?;
    let slot = ctx
        .get_slots_with_token()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .is_ok_and(|t| t.label().trim_end() == token)
        })
        .ok_or("token not found")?;
    let s = ctx.open_rw_session(slot).map_err(|e| e.to_string())?;
    let _ = s.login(UserType::User, Some(&AuthPin::new(pin.to_string())));
    let key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::ValueLen(32u64.into()),
            ],
        )
        .map_err(|e| e.to_string())?;
    let aad = [0u8; 64];
    let mut raw_ops = 0u64;
    let start = Instant::now();
    while start.elapsed() < run_for {
        let mut iv = [1u8; 12];
        let p = GcmParams::new(&mut iv, &aad, 128u64.into()).map_err(|e| e.to_string())?;
        let ct = s
            .encrypt(&Mechanism::AesGcm(p), key, &dek)
            .map_err(|e| e.to_string())?;
        let mut iv = [1u8; 12];
        let p = GcmParams::new(&mut iv, &aad, 128u64.into()).map_err(|e| e.to_string())?;
        let pt = s
            .decrypt(&Mechanism::AesGcm(p), key, &ct)
            .map_err(|e| e.to_string())?;
        if pt != dek {
            return Err("round trip mismatch".into());
        }
        raw_ops += 2;
    }
    let raw_rate = raw_ops as f64 / start.elapsed().as_secs_f64();

    let bind = Binding {
        purpose: Purpose::RootKey,
        instance_id: "bench",
        object_id: "bench-key",
        version_id: "bench-version",
    };
    let blob = unit
        .generate_wrapped(&bind, 32)
        .map_err(|e| e.to_string())?;
    let mut unit_ops = 0u64;
    let start = Instant::now();
    while start.elapsed() < run_for {
        let ct = unit
            .encrypt_dek(&bind, &blob, &[1u8; 12], &aad, &dek)
            .map_err(|e| e.to_string())?;
        let pt = unit
            .decrypt_dek(&bind, &blob, &[1u8; 12], &aad, &ct)
            .map_err(|e| e.to_string())?;
        if pt[..] != dek[..] {
            return Err("round trip mismatch".into());
        }
        unit_ops += 2;
    }
    let unit_rate = unit_ops as f64 / start.elapsed().as_secs_f64();
    println!(
        "{{\"raw_gcm_ops_per_sec\": {raw_rate:.1}, \"unit_gcm_ops_per_sec\": {unit_rate:.1}, \"seconds\": {secs}, \"dek_bytes\": {dek_len}, \"aad_bytes\": {}}}",
        aad.len()
    );
    Ok(())
}
