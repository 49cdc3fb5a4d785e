//! The PKCS#11 crypto unit (cryptoki): the master key and the blob MAC key are
//! sensitive, non-extractable token objects; root-key plaintext never exists
//! outside the HSM (DESIGN §2).
//!
//! - Stored blobs: `format 2 | C_WrapKey(CKM_AES_KEY_WRAP_PAD, master, key) |
//!   HMAC-SHA256 tag` where the tag (computed and verified with C_Sign/C_Verify in
//!   the HSM) covers the same binding bytes as the soft unit's blobs plus the
//!   wrapped bytes. The tag is checked before anything is unwrapped.
//! - Root-key versions are C_UnwrapKey'ed into sensitive, non-extractable session
//!   objects, kept in a bounded LRU (version id → handle, destroyed on eviction
//!   and on `forget`); DEKs are sealed with CKM_AES_GCM inside the HSM.
//! - Material that may leave the unit (standard keys, service secrets, import
//!   private keys) is wrapped as a temporary CKK_GENERIC_SECRET session object
//!   holding `u32 length | bytes` (SoftHSM pads unwrapped values to 8 bytes).
//! - Import tokens: SoftHSM's CKM_RSA_PKCS_OAEP accepts only SHA-1, while the
//!   Key Protect clients use OAEP with SHA-256. So the RSA-4096 import key pair is
//!   generated and OAEP-SHA256 decoded in software (aws-lc-rs), and its private
//!   key is stored as a blob wrapped by the HSM like any other material. The
//!   private key is therefore in process memory (zeroized) while a secure import
//!   is decoded; the imported root key itself goes straight back into the HSM.
//! - Sessions: a pool of about one per core, plus one long-lived "owner" session
//!   that creates the root-key objects (session objects die with the session that
//!   made them). A lost session or login is reopened and retried once.

mod objects;
mod session;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::{Function, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use lru::LruCache;
use zeroize::{Zeroize, Zeroizing};

use crate::blob::binding_bytes;
use crate::{import, Binding, CryptoError, CryptoUnit, Purpose, Result};
use objects::Role;
use session::{handle_stale, open_logged_in, session_lost, Pool};

/// Distinct from the soft unit's format 1: a blob from one unit is refused by the other.
const FORMAT: u8 = 2;

/// The process-wide context for `module` (initialized once), for tools and tests
/// that need their own sessions beside a unit's: a second `Pkcs11` for the same
/// module would finalize it for everyone when dropped.
pub fn pkcs11_context(module: &std::path::Path) -> std::result::Result<Pkcs11, String> {
    session::context(module)
}
const TAG_LEN: usize = 32;
const GCM_TAG_BITS: u64 = 128;

pub const DEFAULT_MASTER_LABEL: &str = "keyhold-master";
pub const DEFAULT_MAC_LABEL: &str = "keyhold-mac";

/// How to reach the token.
pub struct Pkcs11Config {
    /// The PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    pub module: PathBuf,
    /// The token label (slot numbers are not stable).
    pub token_label: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
    pub master_label: String,
    pub mac_label: String,
    /// Create the master and MAC keys when the token has none (dev mode).
    pub create_keys: bool,
    /// Pooled sessions; 0 means one per core.
    pub sessions: usize,
    /// Root-key versions kept as session objects.
    pub cache_entries: usize,
}

#[derive(Clone, Copy)]
struct Keys {
    master: ObjectHandle,
    mac: ObjectHandle,
}

struct CachedRoot {
    blob: Vec<u8>,
    handle: ObjectHandle,
}

/// The owner session, the token keys and the root-key objects it owns.
struct Owner {
    session: Session,
    keys: Keys,
    generation: u64,
    roots: LruCache<String, CachedRoot>,
}

pub struct Pkcs11Unit {
    ctx: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    master_label: String,
    mac_label: String,
    pool: Pool,
    owner: Mutex<Owner>,
}

fn unit_err(what: &'static str) -> impl Fn(Error) -> CryptoError {
    move |_| CryptoError::Unit(what)
}

fn poisoned() -> CryptoError {
    CryptoError::Unit("pkcs11 state lock poisoned")
}

fn aes_len_ok(len: usize) -> bool {
    matches!(len, 16 | 24 | 32)
}

/// Splits `format | wrapped | tag`.
fn split_blob(blob: &[u8]) -> Result<(&[u8], &[u8])> {
    if blob.len() < 1 + 16 + TAG_LEN || blob[0] != FORMAT {
        return Err(CryptoError::BlobIntegrity);
    }
    Ok(blob[1..].split_at(blob.len() - 1 - TAG_LEN))
}

fn mac_input(binding: &Binding<'_>, wrapped: &[u8]) -> Vec<u8> {
    let mut m = binding_bytes(binding);
    m.extend_from_slice(wrapped);
    m
}

fn find_keys(
    session: &Session,
    master: &str,
    mac: &str,
    create: bool,
) -> std::result::Result<Keys, String> {
    Ok(Keys {
        master: objects::find_or_create(session, Role::Master, master, create)?,
        mac: objects::find_or_create(session, Role::Mac, mac, create)?,
    })
}

impl Pkcs11Unit {
    /// Loads the module (once per process), finds the token by label, logs in,
    /// probes the mechanisms and finds (or, with `create_keys`, creates) the keys.
    pub fn open(cfg: Pkcs11Config) -> std::result::Result<Self, String> {
        let ctx = session::context(&cfg.module)?;
        let slot = session::find_slot(&ctx, &cfg.token_label)?;
        objects::probe(&ctx, slot, &cfg.token_label)?;
        let pin = AuthPin::new(cfg.pin.to_string());
        let owner = open_logged_in(&ctx, slot, &pin).map_err(|e| match e {
            Error::Pkcs11(RvError::PinIncorrect, _) => {
                format!(
                    "PKCS#11 login to token {:?} failed: wrong PIN",
                    cfg.token_label
                )
            }
            e => format!("PKCS#11 login to token {:?} failed: {e}", cfg.token_label),
        })?;
        let keys = {
            let _turn = if cfg.create_keys {
                Some(objects::creation_lock(&cfg.module, &cfg.token_label)?)
            } else {
                None
            };
            find_keys(&owner, &cfg.master_label, &cfg.mac_label, cfg.create_keys)?
        };
        let sessions = if cfg.sessions == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.sessions
        };
        let cap = NonZeroUsize::new(cfg.cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        Ok(Pkcs11Unit {
            pool: Pool::new(ctx.clone(), slot, pin.clone(), sessions),
            ctx,
            slot,
            pin,
            master_label: cfg.master_label,
            mac_label: cfg.mac_label,
            owner: Mutex::new(Owner {
                session: owner,
                keys,
                generation: 0,
                roots: LruCache::new(cap),
            }),
        })
    }

    fn keys(&self) -> Result<(Keys, u64)> {
        let o = self.owner.lock().map_err(|_| poisoned())?;
        Ok((o.keys, o.generation))
    }

    /// After a lost session or login: a new owner session (closing the old one
    /// destroys its root-key objects), fresh key handles, no pooled session from
    /// before. Does nothing if another thread recovered since `seen`.
    fn recover(&self, seen: u64) {
        let Ok(mut o) = self.owner.lock() else {
            return;
        };
        if o.generation != seen {
            return;
        }
        let Ok(session) = open_logged_in(&self.ctx, self.slot, &self.pin) else {
            return;
        };
        let Ok(keys) = find_keys(&session, &self.master_label, &self.mac_label, false) else {
            return;
        };
        o.roots.clear();
        o.session = session;
        o.keys = keys;
        o.generation += 1;
        drop(o);
        self.pool.retire_all();
    }

    /// Runs `op` on a pooled session; after a lost session or stale handle,
    /// recovers and retries once.
    fn with_session<T>(
        &self,
        mut op: impl FnMut(&Session, Keys) -> std::result::Result<T, Error>,
    ) -> std::result::Result<T, Error> {
        let mut last = None;
        for _ in 0..2 {
            let (keys, generation) = self.keys().map_err(|_| {
                Error::Pkcs11(
                    RvError::GeneralError,
                    cryptoki::context::Function::OpenSession,
                )
            })?;
            let lease = match self.pool.get() {
                Ok(l) => l,
                Err(e) if session_lost(&e) => {
                    self.recover(generation);
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(session) = lease.session() else {
                return Err(Error::Pkcs11(
                    RvError::SessionHandleInvalid,
                    cryptoki::context::Function::OpenSession,
                ));
            };
            match op(session, keys) {
                Err(e) if session_lost(&e) || handle_stale(&e) => {
                    lease.discard();
                    self.recover(generation);
                    last = Some(e);
                }
                r => return r,
            }
        }
        Err(last.unwrap_or(Error::Pkcs11(
            RvError::GeneralError,
            cryptoki::context::Function::OpenSession,
        )))
    }

    fn tag(&self, binding: &Binding<'_>, wrapped: &[u8]) -> Result<Vec<u8>> {
        let data = mac_input(binding, wrapped);
        self.with_session(|s, k| s.sign(&Mechanism::Sha256Hmac, k.mac, &data))
            .map_err(unit_err("hmac sign"))
    }

    fn verify(&self, binding: &Binding<'_>, wrapped: &[u8], tag: &[u8]) -> Result<()> {
        let data = mac_input(binding, wrapped);
        match self.with_session(|s, k| s.verify(&Mechanism::Sha256Hmac, k.mac, &data, tag)) {
            Ok(()) => Ok(()),
            Err(Error::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
                Err(CryptoError::BlobIntegrity)
            }
            Err(_) => Err(CryptoError::Unit("hmac verify")),
        }
    }

    /// Wraps a temporary session object made by `make`, destroys it, and seals.
    fn wrap_temp(
        &self,
        binding: &Binding<'_>,
        make: impl Fn(&Session) -> std::result::Result<ObjectHandle, Error>,
    ) -> Result<Vec<u8>> {
        let wrapped = self
            .with_session(|s, k| {
                let temp = make(s)?;
                let out = s.wrap_key(&Mechanism::AesKeyWrapPad, k.master, temp);
                let destroyed = s.destroy_object(temp);
                let out = out?;
                destroyed?;
                Ok(out)
            })
            .map_err(|e| match e {
                Error::Pkcs11(
                    RvError::AttributeValueInvalid
                    | RvError::KeySizeRange
                    | RvError::TemplateInconsistent,
                    _,
                ) => CryptoError::InvalidInput("key material the unit cannot hold"),
                _ => CryptoError::Unit("key wrap"),
            })?;
        let tag = self.tag(binding, &wrapped)?;
        let mut blob = Vec::with_capacity(1 + wrapped.len() + TAG_LEN);
        blob.push(FORMAT);
        blob.extend_from_slice(&wrapped);
        blob.extend_from_slice(&tag);
        Ok(blob)
    }

    /// The session object for a root-key version, unwrapping the blob on a miss.
    fn root_handle(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<(ObjectHandle, u64)> {
        {
            let mut o = self.owner.lock().map_err(|_| poisoned())?;
            let generation = o.generation;
            if let Some(c) = o.roots.get(binding.version_id) {
                // A different blob under a known version (a swapped row) is checked afresh.
                if c.blob == blob {
                    return Ok((c.handle, generation));
                }
            }
        }
        let (wrapped, tag) = split_blob(blob)?;
        self.verify(binding, wrapped, tag)?;
        for attempt in 0..2 {
            let mut o = self.owner.lock().map_err(|_| poisoned())?;
            let generation = o.generation;
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ];
            let master = o.keys.master;
            match o
                .session
                .unwrap_key(&Mechanism::AesKeyWrapPad, master, wrapped, &template)
            {
                Ok(handle) => {
                    let entry = CachedRoot {
                        blob: blob.to_vec(),
                        handle,
                    };
                    if let Some((_, old)) = o.roots.push(binding.version_id.to_string(), entry) {
                        if old.handle != handle {
                            let _ = o.session.destroy_object(old.handle);
                        }
                    }
                    return Ok((handle, generation));
                }
                Err(e) if attempt == 0 && (session_lost(&e) || handle_stale(&e)) => {
                    drop(o);
                    self.recover(generation);
                }
                // The tag was good, so the master key differs (another token) or
                // the HSM refused the key: either way the blob is unusable here.
                Err(Error::Pkcs11(
                    RvError::WrappedKeyInvalid
                    | RvError::WrappedKeyLenRange
                    | RvError::EncryptedDataInvalid
                    | RvError::KeySizeRange
                    | RvError::TemplateInconsistent,
                    _,
                )) => return Err(CryptoError::BlobIntegrity),
                Err(_) => return Err(CryptoError::Unit("key unwrap")),
            }
        }
        Err(CryptoError::Unit("key unwrap"))
    }

    /// Runs a GCM operation with the root key; a handle destroyed under us
    /// (evicted, or its session lost) is looked up again once.
    fn with_root<T>(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        op: impl Fn(&Session, ObjectHandle) -> std::result::Result<T, Error>,
    ) -> std::result::Result<T, RootError> {
        for attempt in 0..2 {
            let (handle, generation) =
                self.root_handle(binding, blob).map_err(RootError::Crypto)?;
            let lease = self.pool.get().map_err(RootError::Pkcs11)?;
            let Some(session) = lease.session() else {
                return Err(RootError::Crypto(CryptoError::Unit("no session")));
            };
            match op(session, handle) {
                Err(e) if attempt == 0 && session_lost(&e) => {
                    lease.discard();
                    self.recover(generation);
                }
                Err(e) if attempt == 0 && handle_stale(&e) => {
                    drop(lease);
                    self.drop_root(binding.version_id, handle);
                }
                r => return r.map_err(RootError::Pkcs11),
            }
        }
        Err(RootError::Crypto(CryptoError::Unit("root key handle")))
    }

    /// Forgets a cached handle if it is still the one that failed.
    fn drop_root(&self, version_id: &str, handle: ObjectHandle) {
        if let Ok(mut o) = self.owner.lock() {
            if o.roots.peek(version_id).is_some_and(|c| c.handle == handle) {
                o.roots.pop(version_id);
                let _ = o.session.destroy_object(handle);
            }
        }
    }

    /// Unwraps material that may leave the unit and reads it back.
    fn open_material(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (wrapped, tag) = split_blob(blob)?;
        self.verify(binding, wrapped, tag)?;
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        let out = self.with_session(|s, k| {
            let h = s.unwrap_key(&Mechanism::AesKeyWrapPad, k.master, wrapped, &template)?;
            let attrs = s.get_attributes(h, &[AttributeType::Value]);
            let destroyed = s.destroy_object(h);
            let mut value = None;
            for a in attrs? {
                if let Attribute::Value(v) = a {
                    value = Some(Zeroizing::new(v));
                }
            }
            destroyed?;
            Ok(value)
        });
        match out {
            Ok(Some(v)) => unframe(&v),
            Ok(None) => Err(CryptoError::Unit("unwrapped key has no value")),
            Err(Error::Pkcs11(
                RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange
                | RvError::EncryptedDataInvalid,
                _,
            )) => Err(CryptoError::BlobIntegrity),
            Err(_) => Err(CryptoError::Unit("key unwrap")),
        }
    }

    /// Sealed material as a generic secret: anything that is not a root key.
    fn seal_material(&self, binding: &Binding<'_>, material: &[u8]) -> Result<Vec<u8>> {
        self.wrap_temp(binding, |s| {
            let mut attrs = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Value(frame(material).to_vec()),
            ];
            let r = s.create_object(&attrs);
            wipe(&mut attrs);
            r
        })
    }
}

/// SoftHSM's CKM_AES_KEY_WRAP_PAD gives back generic secrets padded with zeros
/// to a multiple of 8 bytes, so material other than root keys is stored as
/// `u32 length | bytes`.
fn frame(material: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(4 + material.len()));
    v.extend_from_slice(&(material.len() as u32).to_be_bytes());
    v.extend_from_slice(material);
    v
}

fn unframe(value: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let (len, rest) = value
        .split_at_checked(4)
        .ok_or(CryptoError::BlobIntegrity)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let body = rest.get(..len).ok_or(CryptoError::BlobIntegrity)?;
    if rest[len..].iter().any(|b| *b != 0) {
        return Err(CryptoError::BlobIntegrity);
    }
    Ok(Zeroizing::new(body.to_vec()))
}

enum RootError {
    Crypto(CryptoError),
    Pkcs11(Error),
}

/// Clears CKA_VALUE copies made for a template.
fn wipe(attrs: &mut [Attribute]) {
    for a in attrs {
        if let Attribute::Value(v) = a {
            v.zeroize();
        }
    }
}

impl CryptoUnit for Pkcs11Unit {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn blocks(&self) -> bool {
        true
    }

    fn random(&self, out: &mut [u8]) -> Result<()> {
        self.with_session(|s, _| s.generate_random_slice(out))
            .map_err(unit_err("random"))
    }

    fn generate_wrapped(&self, binding: &Binding<'_>, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Err(CryptoError::InvalidInput("empty key material"));
        }
        if binding.purpose != Purpose::RootKey {
            // Material that may leave the unit anyway: HSM random bytes, framed.
            let mut material = Zeroizing::new(vec![0u8; len]);
            self.random(&mut material)?;
            return self.seal_material(binding, &material);
        }
        if !aes_len_ok(len) {
            return Err(CryptoError::InvalidInput(
                "root keys are 16, 24 or 32 bytes",
            ));
        }
        // Generated in the HSM, sensitive (never readable) but extractable:
        // C_WrapKey needs that. Destroyed right after wrapping.
        self.wrap_temp(binding, |s| {
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                    Attribute::ValueLen((len as u64).into()),
                ],
            )
        })
    }

    fn wrap_material(&self, binding: &Binding<'_>, material: &[u8]) -> Result<Vec<u8>> {
        if material.is_empty() {
            return Err(CryptoError::InvalidInput("empty key material"));
        }
        if binding.purpose != Purpose::RootKey {
            return self.seal_material(binding, material);
        }
        if !aes_len_ok(material.len()) {
            return Err(CryptoError::InvalidInput(
                "root keys are 16, 24 or 32 bytes",
            ));
        }
        self.wrap_temp(binding, |s| {
            let mut attrs = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Value(material.to_vec()),
            ];
            let r = s.create_object(&attrs);
            wipe(&mut attrs);
            r
        })
    }

    fn unwrap_material(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if binding.purpose == Purpose::RootKey {
            return Err(CryptoError::Unit("root key material never leaves the unit"));
        }
        self.open_material(binding, blob)
    }

    fn encrypt_dek(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        self.with_root(binding, blob, |s, h| {
            let mut iv = *nonce;
            let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())?;
            s.encrypt(&Mechanism::AesGcm(params), h, plaintext)
        })
        .map_err(|e| match e {
            RootError::Crypto(c) => c,
            RootError::Pkcs11(_) => CryptoError::Unit("seal"),
        })
    }

    fn decrypt_dek(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < 16 {
            return Err(CryptoError::Unauthentic);
        }
        self.with_root(binding, blob, |s, h| {
            let mut iv = *nonce;
            let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())?;
            s.decrypt(&Mechanism::AesGcm(params), h, sealed)
                .map(Zeroizing::new)
        })
        .map_err(|e| match e {
            RootError::Crypto(c) => c,
            RootError::Pkcs11(Error::Pkcs11(
                RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                _,
            )) => CryptoError::Unauthentic,
            // SoftHSM reports a GCM tag mismatch as CKR_GENERAL_ERROR.
            RootError::Pkcs11(Error::Pkcs11(RvError::GeneralError, Function::Decrypt)) => {
                CryptoError::Unauthentic
            }
            RootError::Pkcs11(_) => CryptoError::Unit("open"),
        })
    }

    fn generate_import_key(&self, binding: &Binding<'_>) -> Result<(String, Vec<u8>)> {
        let (public_pem, der) = import::generate()?;
        let wrapped = self.seal_material(binding, &der)?;
        Ok((public_pem, wrapped))
    }

    fn import_decrypt(
        &self,
        binding: &Binding<'_>,
        wrapped_private: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let der = self.open_material(binding, wrapped_private)?;
        import::decrypt(&der, ciphertext)
    }

    fn forget(&self, version_id: &str) {
        if let Ok(mut o) = self.owner.lock() {
            if let Some(c) = o.roots.pop(version_id) {
                let _ = o.session.destroy_object(c.handle);
            }
        }
    }
}
