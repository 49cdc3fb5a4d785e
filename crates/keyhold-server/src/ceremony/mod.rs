//! The master-key ceremony on a node (DESIGN §1, keyprotect-api.md §10.2).
//!
//! The ceremony state (administrators, thresholds, pending commands with their
//! signatures, the current master key's verification pattern) lives in the
//! store and changes by compare-and-swap, durable before the answer. The
//! registers (key parts being loaded) and the transport key live only in this
//! node's memory: a part or a master key is never stored. Each node is a crypto
//! unit that is unsealed separately, as HPCS crypto units are.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use keyhold_ceremony::command::{Command, Verb};
use keyhold_ceremony::register::{NewRegister, UnsealRegister};
use keyhold_ceremony::state::{CeremonyState, Pending, Signed};
use keyhold_ceremony::transport::{self, TransportKey};
use keyhold_ceremony::CeremonyError;
use keyhold_core::timefmt;
use keyhold_core::{Error, Reason, Result};
use keyhold_crypto::SealableUnit;
use keyhold_store::Store;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::service::store_err;

mod rewrap;
#[cfg(test)]
mod tests;

pub use rewrap::Hook;
use rewrap::Walker;

const STATE_PREFIX: &str = "ceremony_state:";
const CAS_ATTEMPTS: u32 = 16;
/// How often a node reads the ceremony state to learn what other nodes did
/// (zeroize, a rotation started or finished).
const STATE_POLL: Duration = Duration::from_secs(1);

/// A signed command as the CLI sends it.
#[derive(Debug, Deserialize)]
pub struct Submission {
    pub command: Command,
    pub admin: String,
    /// Base64 signature over the command's canonical bytes.
    pub signature: String,
}

/// What a submission did.
#[derive(Debug)]
pub enum Outcome {
    Executed {
        verb: Verb,
        signers: Vec<String>,
    },
    Pending(Pending),
    PartLoaded {
        register: &'static str,
        loaded: usize,
        total: usize,
        approved_by: Vec<String>,
    },
    Unsealed {
        verification_pattern: String,
        /// Mid-rotation: the new key's pattern (both keys were loaded).
        rotating_to: Option<String>,
    },
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        match self {
            Outcome::Executed { verb, signers } => json!({
                "result": "executed", "verb": verb.as_str(), "signed_by": signers,
            }),
            Outcome::Pending(p) => json!({
                "result": "pending", "id": p.id, "verb": p.command.verb.as_str(),
                "signed_by": p.signatures.iter().map(|s| s.admin.as_str()).collect::<Vec<_>>(),
                "signatures": p.signatures.len(), "required": p.required,
            }),
            Outcome::PartLoaded {
                register,
                loaded,
                total,
                approved_by,
            } => json!({
                "result": "part_loaded", "register": register, "parts_loaded": loaded, "parts_total": total,
                "approved_by": approved_by,
            }),
            Outcome::Unsealed {
                verification_pattern,
                rotating_to,
            } => json!({
                "result": "unsealed", "verification_pattern": verification_pattern,
                "rotating_to": rotating_to,
            }),
        }
    }
}

struct Registers {
    new: NewRegister,
    unseal: UnsealRegister,
    transport: TransportKey,
}

pub struct Ceremony {
    store: Arc<dyn Store>,
    unit: Arc<SealableUnit>,
    crypto_instance: String,
    account_id: String,
    regs: Arc<Mutex<Registers>>,
    walker: Arc<Walker>,
    held: Arc<Mutex<HeldKeys>>,
}

/// The verification patterns of the keys this node's unit holds (none while
/// sealed): the current key and, mid-rotation, the new one. Compared with the
/// stored state to notice a rotation started or finished on another node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeldKeys {
    pub current: Option<String>,
    pub target: Option<String>,
}

impl HeldKeys {
    fn of(st: &CeremonyState) -> Self {
        HeldKeys {
            current: st.current.as_ref().map(|c| c.verification_pattern.clone()),
            target: st
                .rotation
                .as_ref()
                .map(|r| r.target.verification_pattern.clone()),
        }
    }
}

pub(crate) fn ceremony_err(e: CeremonyError) -> Error {
    match e {
        CeremonyError::WrongPassphrase | CeremonyError::Malformed(_) => {
            Error::new(Reason::BadBody, e.to_string())
        }
        CeremonyError::BadSignature(m) => Error::new(Reason::CeremonySignature, m),
        CeremonyError::NotAllowed(m) => Error::new(Reason::CeremonyState, m),
        CeremonyError::Stale(m) => Error::new(Reason::CeremonyStale, m),
        CeremonyError::PartMismatch(m) => Error::new(Reason::KeyPartMismatch, m),
        CeremonyError::Crypto(what) => {
            tracing::error!(operation = what, "ceremony crypto failure");
            Error::internal()
        }
    }
}

fn new_transport() -> Result<TransportKey> {
    TransportKey::generate().map_err(ceremony_err)
}

impl Ceremony {
    /// The ceremony of `crypto_instance`, starting sealed.
    pub fn open(
        store: Arc<dyn Store>,
        unit: Arc<SealableUnit>,
        crypto_instance: &str,
        account_id: &str,
    ) -> Result<Self> {
        let held = Arc::new(Mutex::new(HeldKeys::default()));
        let walker = Arc::new(Walker::new(
            store.clone(),
            unit.clone(),
            format!("{STATE_PREFIX}{crypto_instance}"),
            held.clone(),
        ));
        let c = Ceremony {
            walker,
            held,
            store,
            unit,
            crypto_instance: crypto_instance.into(),
            account_id: account_id.into(),
            regs: Arc::new(Mutex::new(Registers {
                new: NewRegister::default(),
                unseal: UnsealRegister::default(),
                transport: new_transport()?,
            })),
        };
        let fresh = serde_json::to_vec(&CeremonyState::new(crypto_instance))
            .map_err(|_| Error::internal())?;
        // Nodes starting together agree on one initial state.
        c.store
            .replace_setting_if(&c.key(), None, &fresh)
            .map_err(store_err)?;
        let (_, st) = c.load()?;
        if st.zeroized_at.is_some() {
            c.unit.zeroize();
        }
        c.follow_state();
        Ok(c)
    }

    /// Other nodes' ceremony commands reach this one within [`STATE_POLL`]: a
    /// thread reads the state (one small read) while the ceremony lives and
    /// - zeroizes the unit after another node's `zeroize`;
    /// - seals it when the keys it holds no longer match the state (a rotation
    ///   started on another node: this node lacks the new key, and would
    ///   otherwise fail on the blobs wrapped under it);
    /// - retires the old key when another node finished a rotation this node
    ///   was unsealed for (with both keys).
    fn follow_state(&self) {
        let store: Weak<dyn Store> = Arc::downgrade(&self.store);
        let unit = Arc::downgrade(&self.unit);
        let regs = Arc::downgrade(&self.regs);
        let held = Arc::downgrade(&self.held);
        let walker = Arc::downgrade(&self.walker);
        let key = self.key();
        let _ = std::thread::Builder::new()
            .name("keyhold-ceremony-follow".into())
            .spawn(move || loop {
                std::thread::sleep(STATE_POLL);
                let (Some(store), Some(unit), Some(regs), Some(held), Some(walker)) = (
                    store.upgrade(),
                    unit.upgrade(),
                    regs.upgrade(),
                    held.upgrade(),
                    walker.upgrade(),
                ) else {
                    return;
                };
                if unit.is_zeroized() {
                    return;
                }
                // Serialized with this node's own commands.
                let Ok(_regs) = regs.lock() else { return };
                let Some(st) = store
                    .get_setting(&key)
                    .ok()
                    .flatten()
                    .and_then(|raw| serde_json::from_slice::<CeremonyState>(&raw).ok())
                else {
                    continue;
                };
                if st.zeroized_at.is_some() {
                    unit.zeroize();
                    tracing::warn!("the master key was zeroized by another node: key operations now answer MASTER_KEY_ZEROIZED_ERR");
                    return;
                }
                if unit.is_sealed() {
                    continue;
                }
                let Ok(mut have) = held.lock() else { return };
                let want = HeldKeys::of(&st);
                if *have == want {
                    continue;
                }
                if have.target.is_some() && want.target.is_none() && want.current == have.target {
                    walker.forget_cached();
                    if unit.retire_old_key().is_ok() {
                        tracing::info!("master-key rotation finished on another node: the old key is retired here too");
                    }
                    *have = want;
                } else {
                    unit.seal();
                    *have = HeldKeys::default();
                    tracing::warn!(held = ?*have, wanted = ?want, "the keys this node holds do not match the ceremony state (a master-key rotation started on another node): sealed; unseal it with the parts of every key status lists");
                }
            });
    }

    /// Lets the rotation drop this node's cached key records (which carry
    /// blobs) before the old master key is retired.
    pub fn set_forget_cached_keys(&self, hook: Hook) {
        self.walker.set_forget_cached_keys(hook);
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    pub fn is_sealed(&self) -> bool {
        self.unit.is_sealed()
    }

    fn key(&self) -> String {
        format!("{STATE_PREFIX}{}", self.crypto_instance)
    }

    fn regs(&self) -> Result<MutexGuard<'_, Registers>> {
        self.regs.lock().map_err(|_| Error::internal())
    }

    fn load(&self) -> Result<(Vec<u8>, CeremonyState)> {
        let raw = self
            .store
            .get_setting(&self.key())
            .map_err(store_err)?
            .ok_or_else(Error::internal)?;
        let st = serde_json::from_slice(&raw).map_err(|e| {
            tracing::error!(error = %e, "the stored ceremony state cannot be read");
            Error::internal()
        })?;
        Ok((raw, st))
    }

    /// Writes `st` if nobody else wrote since `raw` was read.
    fn save(&self, raw: &[u8], st: &CeremonyState) -> Result<bool> {
        let bytes = serde_json::to_vec(st).map_err(|_| Error::internal())?;
        self.store
            .replace_setting_if(&self.key(), Some(raw), &bytes)
            .map_err(store_err)
    }

    /// Sealed or not, registers, administrators, thresholds, pending commands: never a secret.
    pub fn status(&self) -> Result<Value> {
        let (_, mut st) = self.load()?;
        st.prune(timefmt::now());
        let regs = self.regs()?;
        let admins: Vec<Value> = st
            .admins
            .iter()
            .map(|a| json!({"name": a.name, "algorithm": a.algorithm.as_str(), "fingerprint": a.fingerprint, "added_at": a.added_at}))
            .collect();
        let pending: Vec<Value> = st
            .pending
            .iter()
            .map(|p| json!({
                "id": p.id, "verb": p.command.verb.as_str(), "seq": p.command.seq, "args": p.command.args,
                "signed_by": p.signatures.iter().map(|s| s.admin.as_str()).collect::<Vec<_>>(),
                "required": p.required, "created_at": p.created_at,
            }))
            .collect();
        let current = match (&st.current, st.zeroized_at) {
            (Some(c), Some(at)) => {
                json!({"state": "zeroized", "verification_pattern": c.verification_pattern,
                "zeroized_at": at})
            }
            (Some(c), None) => {
                json!({"state": "valid", "verification_pattern": c.verification_pattern,
                "parts": c.parts, "activated_at": c.activated_at})
            }
            (None, _) => json!({"state": "empty"}),
        };
        let rotation = match &st.rotation {
            Some(r) => json!({
                "state": "rewrapping",
                "to_verification_pattern": r.target.verification_pattern,
                "to_parts": r.target.parts,
                "blobs_done": r.done, "blobs_total": r.total, "blobs_unreadable": r.unreadable,
                "phase": r.cursor.phase, "started_at": r.started_at,
                "walking_on_this_node": self.walker.is_running(),
            }),
            None => Value::Null,
        };
        Ok(json!({
            "master_key_source": "ceremony",
            "crypto_instance": st.crypto_instance,
            "sealed": self.unit.is_sealed(),
            "zeroized": st.zeroized_at.is_some(),
            "rotation": rotation,
            "imprint_mode": st.imprint,
            "sequence": st.seq,
            "admins": admins,
            "signature_threshold": st.signature_threshold,
            "revocation_threshold": st.revocation_threshold,
            "registers": {
                "new": regs.new.view(),
                "current": current,
                "unseal": regs.unseal.view(&st.keys()),
            },
            "transport_key": {
                "id": regs.transport.id(),
                "algorithm": "x25519-hkdf-sha256-aes-256-gcm",
                "public_key": b64(regs.transport.public()),
            },
            "pending": pending,
        }))
    }

    /// Verifies and applies one signed command.
    pub fn submit(&self, sub: Submission) -> Result<Outcome> {
        sub.command.check_size().map_err(ceremony_err)?;
        let sig = unb64(&sub.signature)?;
        let mut regs = self.regs()?;
        if sub.command.verb == Verb::LoadPart {
            return self.load_part(&mut regs, &sub, &sig);
        }
        for _ in 0..CAS_ATTEMPTS {
            let (raw, mut st) = self.load()?;
            let now = timefmt::now();
            let pattern = || {
                sub.command
                    .arg("verification_pattern")
                    .map_err(ceremony_err)
            };
            // Refuse at the first signature what the registers would refuse at execution.
            match sub.command.verb {
                Verb::Commit => regs.new.check_commit(pattern()?).map_err(ceremony_err)?,
                Verb::Activate => {
                    regs.new.check_activate(pattern()?).map_err(ceremony_err)?;
                    if st.current_pattern() == pattern()? {
                        return Err(Error::new(
                            Reason::CeremonyState,
                            "the new master key register holds the current master key: rotate to a new key",
                        ));
                    }
                    if st.current.is_some() && self.unit.is_sealed() {
                        return Err(Error::new(
                            Reason::CeremonyState,
                            "rotating the master key needs this node unsealed with the current key",
                        ));
                    }
                }
                _ => {}
            }
            let signed = st
                .sign(sub.command.clone(), &sub.admin, &sig, now)
                .map_err(ceremony_err)?;
            let (command, signers) = match signed {
                Signed::Pending(p) => {
                    if self.save(&raw, &st)? {
                        tracing::info!(verb = p.command.verb.as_str(), admin = %sub.admin, signatures = p.signatures.len(), required = p.required, "ceremony command signed, pending");
                        return Ok(Outcome::Pending(p));
                    }
                    continue;
                }
                Signed::Ready { command, signers } => (command, signers),
            };
            st.apply(&command, now).map_err(ceremony_err)?;
            let activated = if command.verb == Verb::Activate {
                let (key, record) = regs.new.committed(now).map_err(ceremony_err)?;
                if st.current.is_some() {
                    st.begin_rotation(record, self.count_blobs()?, now);
                    Some((key, true))
                } else {
                    st.set_current(record);
                    Some((key, false))
                }
            } else {
                None
            };
            if !self.save(&raw, &st)? {
                continue;
            }
            match command.verb {
                Verb::Commit => regs.new.commit(pattern()?).map_err(ceremony_err)?,
                Verb::Activate => {
                    regs.new.clear();
                    regs.transport = new_transport()?;
                    match activated {
                        Some((key, true)) => {
                            if let Ok(mut h) = self.held.lock() {
                                *h = HeldKeys::of(&st);
                            }
                            if self.unit.begin_rotation(key).is_err() {
                                // Sealed meanwhile: the next unseal needs both keys and resumes.
                                tracing::warn!("master-key rotation recorded while the unit was sealed; unseal with both keys' parts to run it");
                            } else {
                                tracing::info!("master-key rotation started: new blobs are wrapped under the new key; stored blobs are being re-wrapped");
                                self.walker.start();
                            }
                        }
                        Some((key, false)) => {
                            if let Ok(mut h) = self.held.lock() {
                                *h = HeldKeys::of(&st);
                            }
                            self.unit.unseal(key)
                        }
                        None => {}
                    }
                }
                Verb::Zeroize => {
                    self.unit.zeroize();
                    regs.new.clear();
                    regs.unseal.clear();
                    regs.transport = new_transport()?;
                    tracing::warn!("the master key was zeroized (crypto-shredding): key operations answer MASTER_KEY_ZEROIZED_ERR");
                }
                _ => {}
            }
            tracing::info!(verb = command.verb.as_str(), signers = ?signers, "ceremony command executed");
            return Ok(Outcome::Executed {
                verb: command.verb,
                signers,
            });
        }
        Err(store_err(keyhold_store::StoreError::Conflict))
    }

    /// A part, loaded by its holder alone (the admin signature authenticates them).
    fn load_part(&self, regs: &mut Registers, sub: &Submission, sig: &[u8]) -> Result<Outcome> {
        let cmd = &sub.command;
        let (_, st) = self.load()?;
        st.check_fresh(cmd).map_err(ceremony_err)?;
        st.verify_admin(&sub.admin, &cmd.canonical(), sig)
            .map_err(ceremony_err)?;
        if st.imprint {
            return Err(ceremony_err(CeremonyError::NotAllowed(
                "key parts are loaded only after leaving imprint mode".into(),
            )));
        }
        let arg = |n: &str| cmd.arg(n).map_err(ceremony_err);
        let tkid = arg("transport_key_id")?;
        if tkid != regs.transport.id() {
            return Err(Error::new(
                Reason::CeremonyStale,
                "the part was sealed to an earlier transport key of this node (a restart, or a register was cleared); load it again",
            ));
        }
        let register = match arg("register")? {
            "new" => "new",
            "unseal" => "unseal",
            _ => return Err(Error::bad_body("the register is \"new\" or \"unseal\"")),
        };
        let approve_only =
            register == "unseal" && cmd.args.get("approve").is_some_and(|v| v == "yes");
        let part = if approve_only {
            None
        } else {
            let ctx = transport::context(&self.crypto_instance, tkid, &sub.admin, register);
            Some(
                regs.transport
                    .open(
                        &unb64(arg("ephemeral_public")?)?,
                        &unb64(arg("ciphertext")?)?,
                        &ctx,
                    )
                    .map_err(ceremony_err)?,
            )
        };
        if register == "new" {
            let Some(part) = part else {
                return Err(Error::bad_body("load-part needs a key part"));
            };
            st.check_not_zeroized().map_err(ceremony_err)?;
            if st.rotation.is_some() {
                return Err(Error::new(
                    Reason::CeremonyState,
                    "a master-key rotation is in progress; load a new key after it finished",
                ));
            }
            if st.current.is_some() && self.unit.is_sealed() {
                return Err(Error::new(
                    Reason::CeremonyState,
                    "a master key is active and this node is sealed: unseal it before loading a new master key (rotation)",
                ));
            }
            let total: u8 = arg("parts")?
                .parse()
                .map_err(|_| Error::bad_body("parts must be 2 or 3"))?;
            regs.new
                .load(&sub.admin, part, total)
                .map_err(ceremony_err)?;
            let view = regs.new.view();
            tracing::info!(admin = %sub.admin, loaded = view.parts_loaded.len(), total, "key part loaded into the new master key register");
            return Ok(Outcome::PartLoaded {
                register,
                loaded: view.parts_loaded.len(),
                total: usize::from(total),
                approved_by: Vec::new(),
            });
        }
        st.check_not_zeroized().map_err(ceremony_err)?;
        let Some(current) = &st.current else {
            return Err(Error::new(
                Reason::CeremonyState,
                "no master key has been activated yet: load parts into the new register, commit and activate",
            ));
        };
        let keys = st.keys();
        if !self.unit.is_sealed() {
            return Err(Error::new(
                Reason::CeremonyState,
                "the crypto unit is not sealed",
            ));
        }
        match part {
            Some(part) => regs
                .unseal
                .load(&keys, &sub.admin, part)
                .map_err(ceremony_err)?,
            None => regs.unseal.approve(&sub.admin).map_err(ceremony_err)?,
        }
        let threshold = usize::from(st.signature_threshold.max(1));
        match regs.unseal.take_if_quorum(threshold) {
            Some(mut got) => {
                let rotating_to = st
                    .rotation
                    .as_ref()
                    .map(|r| r.target.verification_pattern.clone());
                let new = (got.len() == 2).then(|| got.pop()).flatten();
                let Some(old) = got.pop() else {
                    return Err(Error::internal());
                };
                if let Ok(mut h) = self.held.lock() {
                    *h = HeldKeys::of(&st);
                }
                match new {
                    Some(new) => self.unit.unseal_rotating(old, new),
                    None => self.unit.unseal(old),
                }
                regs.transport = new_transport()?;
                tracing::info!(admin = %sub.admin, verification_pattern = %current.verification_pattern, rotating_to = ?rotating_to, "crypto unit unsealed");
                if rotating_to.is_some() {
                    tracing::info!("master-key rotation in progress: resuming the re-wrap walk");
                    self.walker.start();
                }
                Ok(Outcome::Unsealed {
                    verification_pattern: current.verification_pattern.clone(),
                    rotating_to,
                })
            }
            None => {
                let view = regs.unseal.view(&keys);
                tracing::info!(admin = %sub.admin, loaded = view.parts_loaded.len(), approved = view.approved_by.len(), "unseal: part or approval recorded");
                Ok(Outcome::PartLoaded {
                    register,
                    loaded: view.parts_loaded.len(),
                    total: usize::from(view.parts_total),
                    approved_by: view.approved_by,
                })
            }
        }
    }
}

impl Ceremony {
    /// Stored blobs a rotation re-wraps (for its progress).
    fn count_blobs(&self) -> Result<u64> {
        let v = self.store.count_versions().map_err(store_err)?;
        let t = self.store.count_import_tokens().map_err(store_err)?;
        Ok(v + t)
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| Error::bad_body("a field that must be base64 is not"))
}
