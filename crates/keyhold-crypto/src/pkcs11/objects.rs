//! Token objects: the mechanism probe, the master key and the MAC key.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;

/// Every mechanism the unit uses. CKM_AES_KEY_WRAP_KWP (RFC 5649) is not among
/// them: SoftHSM lacks it and cryptoki cannot name it; CKM_AES_KEY_WRAP_PAD is
/// RFC 5649 in SoftHSM and gives the same bytes for 16/24/32-byte keys.
const REQUIRED: [(MechanismType, &str); 5] = [
    // (GENERIC_SECRET_KEY_GEN makes the MAC key.)
    (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
    (MechanismType::AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD"),
    (MechanismType::AES_GCM, "CKM_AES_GCM"),
    (MechanismType::SHA256_HMAC, "CKM_SHA256_HMAC"),
    (
        MechanismType::GENERIC_SECRET_KEY_GEN,
        "CKM_GENERIC_SECRET_KEY_GEN",
    ),
];

/// Fails with a message naming every mechanism the token lacks. (Asked one by
/// one with C_GetMechanismInfo: cryptoki logs an error for every mechanism of
/// C_GetMechanismList it has no name for.)
pub(super) fn probe(ctx: &Pkcs11, slot: Slot, token: &str) -> Result<(), String> {
    let mut missing = Vec::new();
    for (m, name) in REQUIRED {
        match ctx.get_mechanism_info(slot, m) {
            Ok(_) => {}
            Err(Error::Pkcs11(RvError::MechanismInvalid, _)) => missing.push(name),
            Err(e) => return Err(format!("C_GetMechanismInfo({name}) failed: {e}")),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "PKCS#11 token {token:?} lacks required mechanism(s): {}",
            missing.join(", ")
        ))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Role {
    Master,
    Mac,
}

fn template(role: Role, label: &str, id: Vec<u8>) -> (Mechanism<'static>, Vec<Attribute>) {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::ValueLen(32u64.into()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    match role {
        Role::Master => {
            t.extend([
                Attribute::KeyType(KeyType::AES),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ]);
            (Mechanism::AesKeyGen, t)
        }
        Role::Mac => {
            t.extend([
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ]);
            (Mechanism::GenericSecretKeyGen, t)
        }
    }
}

/// Token secret keys labelled `label`, ordered by CKA_ID (random at creation).
fn candidates(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, String> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| format!("cannot search the token for {label:?}: {e}"))?;
    let mut keyed = Vec::with_capacity(found.len());
    for h in found {
        let attrs = session
            .get_attributes(h, &[AttributeType::Id])
            .map_err(|e| format!("cannot read CKA_ID of {label:?}: {e}"))?;
        let id = attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::Id(id) => Some(id),
                _ => None,
            })
            .unwrap_or_default();
        keyed.push((id, h));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keyed.into_iter().map(|(_, h)| h).collect())
}

/// Serializes find-or-create among the processes of this host that use one
/// token: an exclusive `flock` on a file in the temporary directory named after
/// the module and the token, released when the returned file is dropped.
pub(super) fn creation_lock(module: &Path, token: &str) -> Result<File, String> {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{}\0{token}", module.display()).as_bytes(),
    );
    let tag: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = std::env::temp_dir().join(format!("keyhold-pkcs11-{tag}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own; it is released when `file` closes.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "cannot lock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

/// The key labelled `label`, created when absent and `create` is set.
///
/// Several processes may start at once against one token. On one host they
/// take turns (`creation_lock`), so only the first creates the key. If
/// duplicates exist anyway (processes on several hosts sharing a network HSM),
/// every process uses the same one: the smallest CKA_ID. Production tokens
/// should have the keys provisioned ahead of time.
pub(super) fn find_or_create(
    session: &Session,
    role: Role,
    label: &str,
    create: bool,
) -> Result<ObjectHandle, String> {
    let mut found = candidates(session, label)?;
    if found.is_empty() {
        if !create {
            return Err(format!("the token has no key labelled {label:?}"));
        }
        let mut id = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| "cannot generate a CKA_ID".to_string())?;
        let (mech, attrs) = template(role, label, id);
        session
            .generate_key(&mech, &attrs)
            .map_err(|e| format!("cannot create the key {label:?} on the token: {e}"))?;
        found = candidates(session, label)?;
    }
    let chosen = *found
        .first()
        .ok_or_else(|| format!("the key {label:?} vanished from the token"))?;
    check(session, chosen, role, label)?;
    Ok(chosen)
}

/// Refuses a key that could leave the token or cannot do its job.
fn check(session: &Session, h: ObjectHandle, role: Role, label: &str) -> Result<(), String> {
    let attrs = session
        .get_attributes(
            h,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::KeyType,
            ],
        )
        .map_err(|e| format!("cannot read the attributes of {label:?}: {e}"))?;
    let (mut sensitive, mut extractable, mut key_type) = (false, true, None);
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => sensitive = v,
            Attribute::Extractable(v) => extractable = v,
            Attribute::KeyType(t) => key_type = Some(t),
            _ => {}
        }
    }
    if !sensitive || extractable {
        return Err(format!(
            "the key {label:?} must be CKA_SENSITIVE=true and CKA_EXTRACTABLE=false"
        ));
    }
    let ok_type = match role {
        Role::Master => key_type == Some(KeyType::AES),
        Role::Mac => {
            matches!(key_type, Some(t) if t == KeyType::GENERIC_SECRET || t == KeyType::SHA256_HMAC)
        }
    };
    if !ok_type {
        return Err(format!("the key {label:?} has the wrong CKA_KEY_TYPE"));
    }
    Ok(())
}
