//! The re-wrap walk of a master-key rotation. Every stored blob (key versions
//! by version id, then import tokens' private keys by instance id) is opened
//! under the old key and wrapped under the new one inside the unit, and
//! written back by compare-and-swap. The cursor is saved in the ceremony state
//! after every batch, so a node killed mid-walk resumes where it stopped once
//! it is unsealed again (with both keys' parts). When the walk is over the new
//! key becomes current and the old one is dropped from the unit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use keyhold_ceremony::state::{CeremonyState, Rotation, RotationCursor, RotationPhase};
use keyhold_core::model::ImportToken;
use keyhold_crypto::{Binding, CryptoError, Purpose, SealableUnit};
use keyhold_store::{Store, StoreError, VersionBlob};

use super::HeldKeys;

const DEFAULT_BATCH: u32 = 256;
const CAS_ATTEMPTS: u32 = 32;

/// Called when cached key records (which carry blobs) must be dropped.
pub type Hook = Box<dyn Fn() + Send + Sync>;

pub(crate) struct Walker {
    store: Arc<dyn Store>,
    unit: Arc<SealableUnit>,
    state_key: String,
    running: AtomicBool,
    batch: u32,
    pause: Duration,
    grace: Duration,
    forget_cached_keys: OnceLock<Hook>,
    held: Arc<Mutex<HeldKeys>>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

enum Step {
    More,
    Stop,
}

/// What became of one stored blob.
#[derive(Clone, Copy)]
enum Outcome {
    /// Already under the new key.
    AlreadyNew,
    Rewrapped,
    /// Neither key opens it (tampered or swapped); left as it is.
    Unreadable,
    /// The unit was sealed meanwhile: stop, the walk resumes at the next unseal.
    Sealed,
}

impl Walker {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        unit: Arc<SealableUnit>,
        state_key: String,
        held: Arc<Mutex<HeldKeys>>,
    ) -> Self {
        // Throttles for tests and for operators who want a gentler walk.
        let batch = env_u64("KEYHOLD_REWRAP_BATCH")
            .map(|b| b.clamp(1, 10_000) as u32)
            .unwrap_or(DEFAULT_BATCH);
        let pause = Duration::from_millis(env_u64("KEYHOLD_REWRAP_PAUSE_MS").unwrap_or(0));
        let grace = Duration::from_millis(env_u64("KEYHOLD_REWRAP_GRACE_MS").unwrap_or(2000));
        Walker {
            store,
            unit,
            state_key,
            running: AtomicBool::new(false),
            batch,
            pause,
            grace,
            forget_cached_keys: OnceLock::new(),
            held,
        }
    }

    pub(crate) fn set_forget_cached_keys(&self, hook: Hook) {
        let _ = self.forget_cached_keys.set(hook);
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Starts the walk on a thread of its own unless it is running.
    pub(crate) fn start(self: &Arc<Self>) {
        if self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("keyhold-rewrap".into())
            .spawn(move || {
                match me.run() {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "master-key rotation: the re-wrap walk stopped; it resumes at the next unseal or restart")
                    }
                }
                me.running.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            tracing::error!("master-key rotation: cannot start the re-wrap thread");
            self.running.store(false, Ordering::SeqCst);
        }
    }

    fn load(&self) -> Result<(Vec<u8>, CeremonyState), String> {
        let raw = self
            .store
            .get_setting(&self.state_key)
            .map_err(|e| e.to_string())?
            .ok_or("no ceremony state")?;
        let st = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
        Ok((raw, st))
    }

    fn save(&self, raw: &[u8], st: &CeremonyState) -> Result<bool, String> {
        let bytes = serde_json::to_vec(st).map_err(|e| e.to_string())?;
        self.store
            .replace_setting_if(&self.state_key, Some(raw), &bytes)
            .map_err(|e| e.to_string())
    }

    fn run(&self) -> Result<(), String> {
        // Requests that wrapped a blob under the old key just before the rotation
        // began store it within the store timeout; the walk starts after them.
        std::thread::sleep(self.grace);
        loop {
            if self.unit.is_sealed() {
                return Ok(());
            }
            let (_, st) = self.load()?;
            if st.zeroized_at.is_some() {
                return Ok(());
            }
            let Some(rot) = st.rotation else {
                return Ok(());
            };
            let step = match rot.cursor.phase {
                RotationPhase::KeyVersions => self.versions(&rot)?,
                RotationPhase::ImportTokens => self.tokens(&rot)?,
                RotationPhase::Done => return self.finish(&rot),
            };
            if let Step::Stop = step {
                return Ok(());
            }
            if !self.pause.is_zero() {
                std::thread::sleep(self.pause);
            }
        }
    }

    /// Re-wraps one blob under the new key and writes it with `write` (a
    /// compare-and-swap: it does nothing when the blob changed meanwhile, say
    /// because another node re-wrapped it).
    fn rewrap(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        write: impl FnOnce(&[u8]) -> Result<bool, StoreError>,
    ) -> Result<Outcome, String> {
        match self.unit.rewrap(binding, blob) {
            Ok(None) => Ok(Outcome::AlreadyNew),
            Ok(Some(new)) => {
                write(&new).map_err(|e| e.to_string())?;
                Ok(Outcome::Rewrapped)
            }
            Err(CryptoError::BlobIntegrity) => Ok(Outcome::Unreadable),
            Err(CryptoError::Sealed) => Ok(Outcome::Sealed),
            Err(e) => Err(e.to_string()),
        }
    }

    fn rewrap_version(&self, b: &VersionBlob) -> Result<Outcome, String> {
        let binding = Binding {
            purpose: if b.extractable {
                Purpose::StandardKey
            } else {
                Purpose::RootKey
            },
            instance_id: &b.instance_id,
            object_id: &b.key_id,
            version_id: &b.version_id,
        };
        self.rewrap(&binding, &b.blob, |new| {
            self.store
                .replace_version_blob_if(&b.version_id, &b.blob, new)
        })
    }

    fn rewrap_token(&self, t: &ImportToken) -> Result<Outcome, String> {
        let binding = Binding {
            purpose: Purpose::ImportTokenKey,
            instance_id: &t.instance_id,
            object_id: &t.token_id,
            version_id: "1",
        };
        self.rewrap(&binding, &t.wrapped_private_key, |new| {
            self.store
                .replace_import_token_key_if(&t.instance_id, &t.wrapped_private_key, new)
        })
    }

    fn versions(&self, rot: &Rotation) -> Result<Step, String> {
        let batch = self
            .store
            .version_blobs_after(&rot.cursor.after, self.batch)
            .map_err(|e| e.to_string())?;
        let Some(last) = batch.last() else {
            return self.advance(rot, RotationPhase::ImportTokens, String::new(), 0, 0);
        };
        let mut unreadable = 0;
        for b in &batch {
            match self.rewrap_version(b)? {
                Outcome::Sealed => return Ok(Step::Stop),
                Outcome::AlreadyNew | Outcome::Rewrapped => {}
                Outcome::Unreadable => {
                    unreadable += 1;
                    tracing::error!(instance_id = %b.instance_id, key_id = %b.key_id, version_id = %b.version_id,
                        "master-key rotation: a stored blob fails its integrity check under both keys (tampered or swapped); left as it is");
                }
            }
        }
        let after = last.version_id.clone();
        self.advance(
            rot,
            RotationPhase::KeyVersions,
            after,
            batch.len() as u64,
            unreadable,
        )
    }

    fn tokens(&self, rot: &Rotation) -> Result<Step, String> {
        let batch = self
            .store
            .import_tokens_after(&rot.cursor.after, self.batch)
            .map_err(|e| e.to_string())?;
        let Some(last) = batch.last() else {
            return self.advance(rot, RotationPhase::Done, String::new(), 0, 0);
        };
        let mut unreadable = 0;
        for t in &batch {
            match self.rewrap_token(t)? {
                Outcome::Sealed => return Ok(Step::Stop),
                Outcome::AlreadyNew | Outcome::Rewrapped => {}
                Outcome::Unreadable => {
                    unreadable += 1;
                    tracing::error!(instance_id = %t.instance_id, "master-key rotation: an import token's private key fails its integrity check under both keys; left as it is");
                }
            }
        }
        let after = last.instance_id.clone();
        self.advance(
            rot,
            RotationPhase::ImportTokens,
            after,
            batch.len() as u64,
            unreadable,
        )
    }

    /// Records progress durably (compare-and-swap against ceremony commands).
    fn advance(
        &self,
        rot: &Rotation,
        phase: RotationPhase,
        after: String,
        done: u64,
        unreadable: u64,
    ) -> Result<Step, String> {
        for _ in 0..CAS_ATTEMPTS {
            let (raw, mut st) = self.load()?;
            let Some(r) = st.rotation.as_mut() else {
                return Ok(Step::Stop);
            };
            if r.target != rot.target || r.cursor != rot.cursor || st.zeroized_at.is_some() {
                // Another walker moved on, or the rotation was ended.
                return Ok(Step::Stop);
            }
            r.cursor = RotationCursor {
                phase,
                after: after.clone(),
            };
            r.done += done;
            r.unreadable += unreadable;
            if self.save(&raw, &st)? {
                return Ok(Step::More);
            }
        }
        Err("the ceremony state kept changing; progress not saved".into())
    }

    fn finish(&self, rot: &Rotation) -> Result<(), String> {
        // Cached key records may carry blobs read before they were re-wrapped:
        // drop them, let requests that read a blob before the walk ended finish,
        // and only then retire the old key.
        self.forget_cached();
        std::thread::sleep(self.grace);
        self.forget_cached();
        // A request that wrapped a blob under the old key just before the rotation
        // began may have stored it after the walk passed its place. Retiring the old
        // key would then lose that key for good, so walk everything once more and
        // retire only after a walk that found nothing left under the old key.
        loop {
            match self.sweep()? {
                None => return Ok(()),
                Some(0) => break,
                Some(n) => {
                    tracing::warn!(
                        blobs = n,
                        "master-key rotation: re-wrapped blobs stored under the old key after the walk passed them; checking again"
                    );
                    std::thread::sleep(self.grace);
                }
            }
        }
        for _ in 0..CAS_ATTEMPTS {
            let (raw, mut st) = self.load()?;
            match &st.rotation {
                Some(r) if r.target == rot.target && st.zeroized_at.is_none() => {}
                _ => return Ok(()),
            }
            st.finish_rotation();
            if self.save(&raw, &st)? {
                if let Ok(mut h) = self.held.lock() {
                    *h = HeldKeys::of(&st);
                }
                self.unit.retire_old_key().map_err(|e| e.to_string())?;
                tracing::info!(verification_pattern = %rot.target.verification_pattern, blobs = rot.done, unreadable = rot.unreadable,
                    "master-key rotation finished: every stored blob is wrapped under the new master key; the old key is retired");
                return Ok(());
            }
        }
        Err("the ceremony state kept changing; the rotation is not finished yet".into())
    }

    /// Walks every stored blob once more and re-wraps any still under the old key.
    /// Returns how many it re-wrapped (`None`: the unit was sealed meanwhile). Blobs
    /// neither key opens were counted by the walk; they are left as they are.
    fn sweep(&self) -> Result<Option<u64>, String> {
        let mut rewrapped = 0;
        let mut count = |o: Outcome| match o {
            Outcome::Sealed => None,
            Outcome::Rewrapped => {
                rewrapped += 1;
                Some(())
            }
            Outcome::AlreadyNew | Outcome::Unreadable => Some(()),
        };
        let mut after = String::new();
        loop {
            let batch = self
                .store
                .version_blobs_after(&after, self.batch)
                .map_err(|e| e.to_string())?;
            let Some(last) = batch.last() else { break };
            for b in &batch {
                if count(self.rewrap_version(b)?).is_none() {
                    return Ok(None);
                }
            }
            after = last.version_id.clone();
        }
        after.clear();
        loop {
            let batch = self
                .store
                .import_tokens_after(&after, self.batch)
                .map_err(|e| e.to_string())?;
            let Some(last) = batch.last() else { break };
            for t in &batch {
                if count(self.rewrap_token(t)?).is_none() {
                    return Ok(None);
                }
            }
            after = last.instance_id.clone();
        }
        Ok(Some(rewrapped))
    }

    pub(crate) fn forget_cached(&self) {
        if let Some(f) = self.forget_cached_keys.get() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use keyhold_crypto::CryptoUnit;
    use keyhold_store::SqliteStore;
    use zeroize::Zeroizing;

    use super::*;

    #[test]
    fn the_sweep_finds_a_blob_stored_under_the_old_key_after_the_walk() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let unit = Arc::new(SealableUnit::sealed(16));
        unit.unseal(Zeroizing::new([1u8; 32]));
        let binding = Binding {
            purpose: Purpose::ImportTokenKey,
            instance_id: "inst",
            object_id: "t",
            version_id: "1",
        };
        // Wrapped just before the rotation began, stored after the walk passed it.
        let old = unit.wrap_material(&binding, b"private key").unwrap();
        unit.begin_rotation(Zeroizing::new([2u8; 32])).unwrap();
        store
            .put_import_token(&ImportToken {
                instance_id: "inst".into(),
                created_at: 0,
                expires_at: i64::MAX,
                max_retrievals: 1,
                remaining_retrievals: 1,
                public_key_pem: String::new(),
                nonce: vec![0; 12],
                wrapped_private_key: old.clone(),
                token_id: "t".into(),
            })
            .unwrap();
        let held = Arc::new(Mutex::new(HeldKeys {
            current: None,
            target: None,
        }));
        let walker = Walker::new(store.clone(), unit.clone(), "test".into(), held);
        assert_eq!(walker.sweep().unwrap(), Some(1));
        assert_eq!(walker.sweep().unwrap(), Some(0), "a clean sweep comes next");
        let new = store
            .get_import_token("inst")
            .unwrap()
            .unwrap()
            .wrapped_private_key;
        assert_ne!(new, old);
        unit.retire_old_key().unwrap();
        assert_eq!(
            &unit.unwrap_material(&binding, &new).unwrap()[..],
            b"private key"
        );
    }
}
