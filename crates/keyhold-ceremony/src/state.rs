//! The ceremony state kept in the store (JSON) and its rules: imprint mode,
//! administrators, thresholds, pending commands and their signatures, and the
//! verification pattern of the current master key. It never holds a part or a
//! master key.

use serde::{Deserialize, Serialize};

use crate::admin::{self, check_name, check_public, SigAlg};
use crate::command::{Command, Verb};
use crate::encode::{b64, unb64};
use crate::{CeremonyError, Result};

pub const MAX_ADMINS: usize = 8;
pub const MAX_THRESHOLD: u8 = 8;
/// Pending commands older than this are dropped.
pub const PENDING_TTL_SECS: i64 = 24 * 3600;
const MAX_PENDING: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    pub name: String,
    pub algorithm: SigAlg,
    pub public_key: String,
    pub fingerprint: String,
    pub added_at: i64,
}

/// One part of the current master key, as recorded at activation: who loaded it
/// and its verification pattern (so a wrong part is refused at unseal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub holder: String,
    pub verification_pattern: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentKey {
    pub verification_pattern: String,
    pub parts: Vec<PartRecord>,
    pub activated_at: i64,
}

/// Where the re-wrap walk of a master-key rotation stands: every stored blob
/// is visited in a stable order (key versions by version id, then import
/// tokens by instance id); `after` is the last one done in `phase`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationCursor {
    pub phase: RotationPhase,
    pub after: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationPhase {
    KeyVersions,
    ImportTokens,
    Done,
}

/// A master-key rotation in progress: `current` still opens the blobs not
/// re-wrapped yet; new blobs are wrapped under `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub target: CurrentKey,
    pub cursor: RotationCursor,
    /// Blobs visited so far, and how many there were when the walk started.
    pub done: u64,
    pub total: u64,
    /// Blobs neither key opens (tampered or swapped): left as they are.
    #[serde(default)]
    pub unreadable: u64,
    pub started_at: i64,
}

impl Rotation {
    pub fn new(target: CurrentKey, total: u64, now: i64) -> Self {
        Rotation {
            target,
            cursor: RotationCursor {
                phase: RotationPhase::KeyVersions,
                after: String::new(),
            },
            done: 0,
            total,
            unreadable: 0,
            started_at: now,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub admin: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub command: Command,
    pub signatures: Vec<Signature>,
    pub required: usize,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremonyState {
    pub crypto_instance: String,
    /// The sequence number the next command must carry.
    pub seq: u64,
    pub imprint: bool,
    pub admins: Vec<Admin>,
    /// 0 until set.
    pub signature_threshold: u8,
    pub revocation_threshold: u8,
    pub current: Option<CurrentKey>,
    pub pending: Vec<Pending>,
    /// A master-key rotation in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// When the master key was destroyed (crypto-shredding): nothing unseals again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zeroized_at: Option<i64>,
}

/// What a signature did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// Enough administrators signed: the caller executes the command.
    Ready {
        command: Command,
        signers: Vec<String>,
    },
    /// More signatures are needed.
    Pending(Pending),
}

impl CeremonyState {
    pub fn new(crypto_instance: &str) -> Self {
        CeremonyState {
            crypto_instance: crypto_instance.into(),
            seq: 1,
            imprint: true,
            admins: Vec::new(),
            signature_threshold: 0,
            revocation_threshold: 0,
            current: None,
            pending: Vec::new(),
            rotation: None,
            zeroized_at: None,
        }
    }

    pub fn admin(&self, name: &str) -> Option<&Admin> {
        self.admins.iter().find(|a| a.name == name)
    }

    /// How many distinct administrators must sign `verb`.
    pub fn required(&self, verb: Verb) -> usize {
        if self.imprint {
            return 1;
        }
        let t = match verb {
            Verb::RemoveAdmin => self.revocation_threshold,
            _ => self.signature_threshold,
        };
        usize::from(t.max(1))
    }

    /// Verifies `sig` over `msg` by the administrator `name`.
    pub fn verify_admin(&self, name: &str, msg: &[u8], sig: &[u8]) -> Result<()> {
        let a = self.admin(name).ok_or_else(|| {
            CeremonyError::BadSignature(format!(
                "{name:?} is not an administrator of this crypto instance"
            ))
        })?;
        let public = unb64(&a.public_key, "public_key")?;
        admin::verify(a.algorithm, &public, msg, sig).map_err(|_| {
            CeremonyError::BadSignature(format!(
                "the signature does not verify with administrator {name:?}'s key"
            ))
        })
    }

    /// Checks that `cmd` is meant for this ceremony now.
    pub fn check_fresh(&self, cmd: &Command) -> Result<()> {
        if cmd.crypto_instance != self.crypto_instance {
            return Err(CeremonyError::Stale(format!(
                "the command is for crypto instance {:?}, not {:?}",
                cmd.crypto_instance, self.crypto_instance
            )));
        }
        if cmd.verb != Verb::LoadPart && cmd.seq != self.seq {
            return Err(CeremonyError::Stale(format!(
                "the command was prepared for sequence number {}, but the ceremony is at {}: another command ran in between; prepare and sign it again",
                cmd.seq, self.seq
            )));
        }
        Ok(())
    }

    /// Drops pending commands that can no longer run.
    pub fn prune(&mut self, now: i64) {
        let seq = self.seq;
        self.pending
            .retain(|p| p.command.seq == seq && now - p.created_at < PENDING_TTL_SECS);
    }

    /// Records `admin`'s signature on `cmd` (checking it, and that `cmd` could
    /// run now); returns the command once enough administrators signed.
    pub fn sign(&mut self, cmd: Command, signer: &str, sig: &[u8], now: i64) -> Result<Signed> {
        cmd.check_size()?;
        self.check_fresh(&cmd)?;
        if cmd.verb == Verb::LoadPart {
            return Err(CeremonyError::Malformed(
                "a key part is loaded by its holder alone, not through the quorum".into(),
            ));
        }
        self.prune(now);
        let msg = cmd.canonical();
        if self.imprint && cmd.verb == Verb::AddAdmin {
            // In imprint mode an administrator enrolls with their own key: the
            // signature proves they hold the private half of what is added.
            if cmd.arg("name")? != signer {
                return Err(CeremonyError::BadSignature(
                    "in imprint mode, adding an administrator is signed by that administrator's own key".into(),
                ));
            }
            let alg = SigAlg::parse(cmd.arg("algorithm")?)?;
            let public = unb64(cmd.arg("public_key")?, "public_key")?;
            check_public(alg, &public)?;
            admin::verify(alg, &public, &msg, sig).map_err(|_| {
                CeremonyError::BadSignature(
                    "the signature does not verify with the key being added".into(),
                )
            })?;
        } else {
            self.verify_admin(signer, &msg, sig)?;
        }
        // Refuse now what would be refused at execution.
        self.clone().apply(&cmd, now)?;
        let id = cmd.id();
        let required = self.required(cmd.verb);
        let pos = match self.pending.iter().position(|p| p.id == id) {
            Some(i) => i,
            None => {
                if self.pending.len() >= MAX_PENDING {
                    return Err(CeremonyError::NotAllowed(
                        "too many pending ceremony commands; wait for them to run or expire".into(),
                    ));
                }
                self.pending.push(Pending {
                    id: id.clone(),
                    command: cmd.clone(),
                    signatures: Vec::new(),
                    required,
                    created_at: now,
                });
                self.pending.len() - 1
            }
        };
        let p = &mut self.pending[pos];
        if p.signatures.iter().any(|s| s.admin == signer) {
            return Err(CeremonyError::NotAllowed(format!(
                "administrator {signer:?} has already signed this command ({} of {} signatures); another administrator must sign it",
                p.signatures.len(),
                required
            )));
        }
        p.signatures.push(Signature {
            admin: signer.into(),
            signature: b64(sig),
        });
        p.required = required;
        if p.signatures.len() >= required {
            let signers = p.signatures.iter().map(|s| s.admin.clone()).collect();
            self.pending.remove(pos);
            return Ok(Signed::Ready {
                command: cmd,
                signers,
            });
        }
        Ok(Signed::Pending(p.clone()))
    }

    /// Applies an executed command to the state and advances the sequence
    /// number (which invalidates every other pending command). `commit` and
    /// `activate` act on the registers; the caller does that and, for
    /// activate, records the key with [`CeremonyState::set_current`].
    pub fn apply(&mut self, cmd: &Command, now: i64) -> Result<()> {
        match cmd.verb {
            Verb::AddAdmin => {
                let name = cmd.arg("name")?;
                check_name(name)?;
                let alg = SigAlg::parse(cmd.arg("algorithm")?)?;
                let public = unb64(cmd.arg("public_key")?, "public_key")?;
                check_public(alg, &public)?;
                if self.admin(name).is_some() {
                    return Err(CeremonyError::NotAllowed(format!(
                        "{name:?} is already an administrator"
                    )));
                }
                let fp = admin::fingerprint(alg, &public);
                if self.admins.iter().any(|a| a.fingerprint == fp) {
                    return Err(CeremonyError::NotAllowed(
                        "that signature key already belongs to an administrator".into(),
                    ));
                }
                if self.admins.len() >= MAX_ADMINS {
                    return Err(CeremonyError::NotAllowed(format!(
                        "a crypto instance has at most {MAX_ADMINS} administrators"
                    )));
                }
                self.admins.push(Admin {
                    name: name.into(),
                    algorithm: alg,
                    public_key: b64(&public),
                    fingerprint: fp,
                    added_at: now,
                });
            }
            Verb::RemoveAdmin => {
                let name = cmd.arg("name")?;
                if self.admin(name).is_none() {
                    return Err(CeremonyError::NotAllowed(format!(
                        "{name:?} is not an administrator"
                    )));
                }
                if self
                    .keys()
                    .iter()
                    .any(|c| c.parts.iter().any(|p| p.holder == name))
                {
                    // Unsealing needs every part, loaded by its holder.
                    return Err(CeremonyError::NotAllowed(format!(
                        "{name:?} holds a part of the current master key: without them the crypto unit could not be unsealed"
                    )));
                }
                let left = self.admins.len() - 1;
                if !self.imprint
                    && left < usize::from(self.signature_threshold.max(self.revocation_threshold))
                {
                    return Err(CeremonyError::NotAllowed(format!(
                        "removing {name:?} would leave {left} administrators, fewer than a threshold; lower the thresholds first"
                    )));
                }
                self.admins.retain(|a| a.name != name);
            }
            Verb::SetThresholds => {
                let sig = cmd.arg_u8("signature")?;
                let rev = cmd.arg_u8("revocation")?;
                for (what, t) in [("signature", sig), ("revocation", rev)] {
                    if !(1..=MAX_THRESHOLD).contains(&t) {
                        return Err(CeremonyError::Malformed(format!(
                            "the {what} threshold must be 1 to {MAX_THRESHOLD}"
                        )));
                    }
                    if !self.imprint && usize::from(t) > self.admins.len() {
                        return Err(CeremonyError::NotAllowed(format!(
                            "the {what} threshold ({t}) cannot exceed the number of administrators ({})",
                            self.admins.len()
                        )));
                    }
                }
                self.signature_threshold = sig;
                self.revocation_threshold = rev;
            }
            Verb::ExitImprint => {
                if !self.imprint {
                    return Err(CeremonyError::NotAllowed(
                        "the crypto instance is not in imprint mode".into(),
                    ));
                }
                if self.signature_threshold == 0 || self.revocation_threshold == 0 {
                    return Err(CeremonyError::NotAllowed(
                        "set the signature and revocation thresholds before leaving imprint mode"
                            .into(),
                    ));
                }
                let need = usize::from(self.signature_threshold.max(self.revocation_threshold));
                if self.admins.len() < need {
                    return Err(CeremonyError::NotAllowed(format!(
                        "leaving imprint mode needs at least {need} administrators (the thresholds); there are {}",
                        self.admins.len()
                    )));
                }
                self.imprint = false;
            }
            Verb::Commit | Verb::Activate | Verb::LoadPart => {
                if self.imprint {
                    return Err(CeremonyError::NotAllowed(
                        "master key parts are loaded, committed and activated only after leaving imprint mode".into(),
                    ));
                }
                self.check_not_zeroized()?;
                if self.rotation.is_some() {
                    return Err(CeremonyError::NotAllowed(
                        "a master-key rotation is in progress; wait until every stored key is re-wrapped (see status)".into(),
                    ));
                }
                // Activate while a key is current starts a rotation: the caller
                // records it with [`CeremonyState::begin_rotation`].
            }
            Verb::Zeroize => {
                if self.imprint {
                    return Err(CeremonyError::NotAllowed(
                        "zeroize is a quorum command, run after leaving imprint mode".into(),
                    ));
                }
                self.check_not_zeroized()?;
                if self.current.is_none() {
                    return Err(CeremonyError::NotAllowed(
                        "no master key has been activated: there is nothing to zeroize".into(),
                    ));
                }
                if cmd.arg("verification_pattern")? != self.current_pattern() {
                    return Err(CeremonyError::PartMismatch(
                        "the verification pattern signed is not the current master key's".into(),
                    ));
                }
                self.zeroized_at = Some(now);
                self.rotation = None;
            }
        }
        if cmd.verb != Verb::LoadPart {
            self.seq += 1;
            self.pending.clear();
        }
        Ok(())
    }

    pub fn set_current(&mut self, key: CurrentKey) {
        self.current = Some(key);
    }

    /// The keys whose parts unseal the unit: the current one, and during a
    /// rotation the new one too.
    pub fn keys(&self) -> Vec<&CurrentKey> {
        self.current
            .iter()
            .chain(self.rotation.as_ref().map(|r| &r.target))
            .collect()
    }

    /// The current master key's verification pattern ("" if none).
    pub fn current_pattern(&self) -> &str {
        self.current
            .as_ref()
            .map(|c| c.verification_pattern.as_str())
            .unwrap_or("")
    }

    pub fn check_not_zeroized(&self) -> Result<()> {
        match self.zeroized_at {
            Some(_) => Err(CeremonyError::NotAllowed(
                "the master key of this crypto instance was zeroized (crypto-shredding): its keys can never be used again".into(),
            )),
            None => Ok(()),
        }
    }

    /// `activate` while a key is current: new blobs are wrapped under `target`
    /// from now on, and every stored blob is re-wrapped (`total` of them).
    pub fn begin_rotation(&mut self, target: CurrentKey, total: u64, now: i64) {
        self.rotation = Some(Rotation::new(target, total, now));
    }

    /// The walk is over: the new key is current and the old one is retired.
    pub fn finish_rotation(&mut self) -> bool {
        match self.rotation.take() {
            Some(r) => {
                self.current = Some(r.target);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{AdminKeyFile, AdminSigner};
    use crate::KdfParams;

    const FAST: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 1,
        p: 1,
    };

    fn admin(name: &str) -> (AdminKeyFile, AdminSigner) {
        let f = AdminKeyFile::generate(name, SigAlg::Ed25519, b"pw", FAST).unwrap();
        let s = f.unlock(b"pw").unwrap();
        (f, s)
    }

    fn add(st: &mut CeremonyState, f: &AdminKeyFile, signer: &AdminSigner) -> Result<Signed> {
        let cmd = Command::new("ci", st.seq, Verb::AddAdmin)
            .with("name", f.name.as_str())
            .with("algorithm", f.algorithm.as_str())
            .with("public_key", f.public_key.as_str());
        let sig = signer.sign(&cmd.canonical()).unwrap();
        st.sign(cmd, &signer.name, &sig, 0)
    }

    fn run(st: &mut CeremonyState, cmd: Command, s: &AdminSigner) -> Result<Signed> {
        let sig = s.sign(&cmd.canonical()).unwrap();
        let out = st.sign(cmd, &s.name, &sig, 0)?;
        if let Signed::Ready { command, .. } = &out {
            st.apply(command, 0)?;
        }
        Ok(out)
    }

    #[test]
    fn imprint_then_quorum() {
        let mut st = CeremonyState::new("ci");
        let (fa, a) = admin("alice");
        let (fb, b) = admin("bob");
        let (fc, c) = admin("carol");
        // Enrolling someone else in imprint mode is refused.
        assert!(matches!(
            add(&mut st, &fb, &a),
            Err(CeremonyError::BadSignature(_))
        ));
        for (f, s) in [(&fa, &a), (&fb, &b), (&fc, &c)] {
            let out = add(&mut st, f, s).unwrap();
            let Signed::Ready { command, .. } = out else {
                panic!("imprint needs one signature")
            };
            st.apply(&command, 0).unwrap();
        }
        assert_eq!(st.admins.len(), 3);
        // Leaving imprint mode needs thresholds.
        let exit = Command::new("ci", st.seq, Verb::ExitImprint);
        assert!(matches!(
            run(&mut st, exit, &a),
            Err(CeremonyError::NotAllowed(_))
        ));
        let t = Command::new("ci", st.seq, Verb::SetThresholds)
            .with("signature", "2")
            .with("revocation", "2");
        run(&mut st, t, &a).unwrap();
        let exit = Command::new("ci", st.seq, Verb::ExitImprint);
        run(&mut st, exit, &b).unwrap();
        assert!(!st.imprint);

        // One signature is not enough now, and signing twice does not count twice.
        let t = Command::new("ci", st.seq, Verb::SetThresholds)
            .with("signature", "3")
            .with("revocation", "2");
        assert!(matches!(
            run(&mut st, t.clone(), &a).unwrap(),
            Signed::Pending(_)
        ));
        assert_eq!(st.signature_threshold, 2);
        assert!(matches!(
            run(&mut st, t.clone(), &a),
            Err(CeremonyError::NotAllowed(_))
        ));
        // A forged signature is refused.
        let forged = b.sign(&t.canonical()).unwrap();
        assert!(matches!(
            st.sign(t.clone(), "carol", &forged, 0),
            Err(CeremonyError::BadSignature(_))
        ));
        assert!(matches!(run(&mut st, t, &c).unwrap(), Signed::Ready { .. }));
        assert_eq!(st.signature_threshold, 3);

        // A replayed (old-sequence) command is stale.
        let old = Command::new("ci", 1, Verb::ExitImprint);
        assert!(matches!(
            run(&mut st, old, &a),
            Err(CeremonyError::Stale(_))
        ));
        // Removing below a threshold is refused at the first signature.
        let rm = Command::new("ci", st.seq, Verb::RemoveAdmin).with("name", "carol");
        assert!(matches!(
            run(&mut st, rm, &a),
            Err(CeremonyError::NotAllowed(_))
        ));
        // Activate needs nothing from the state but refuses a second key (rotation seam).
        st.set_current(CurrentKey {
            verification_pattern: "vp".into(),
            parts: vec![PartRecord {
                holder: "bob".into(),
                verification_pattern: "p".into(),
            }],
            activated_at: 0,
        });
        // A part holder cannot be removed while their part is needed to unseal.
        let lower = Command::new("ci", st.seq, Verb::SetThresholds)
            .with("signature", "1")
            .with("revocation", "1");
        run(&mut st, lower.clone(), &a).unwrap();
        run(&mut st, lower.clone(), &b).unwrap();
        run(&mut st, lower, &c).unwrap();
        let rm = Command::new("ci", st.seq, Verb::RemoveAdmin).with("name", "bob");
        assert!(matches!(
            run(&mut st, rm, &a),
            Err(CeremonyError::NotAllowed(_))
        ));
        // Activate while a key is current starts a rotation; nothing else key-related runs meanwhile.
        let act = Command::new("ci", st.seq, Verb::Activate);
        assert!(matches!(
            run(&mut st, act, &a).unwrap(),
            Signed::Ready { .. }
        ));
        let target = CurrentKey {
            verification_pattern: "vp2".into(),
            parts: vec![PartRecord {
                holder: "carol".into(),
                verification_pattern: "q".into(),
            }],
            activated_at: 1,
        };
        st.begin_rotation(target.clone(), 10, 1);
        assert_eq!(st.keys().len(), 2);
        let rm = Command::new("ci", st.seq, Verb::RemoveAdmin).with("name", "carol");
        assert!(matches!(
            run(&mut st, rm, &a),
            Err(CeremonyError::NotAllowed(_))
        ));
        let act = Command::new("ci", st.seq, Verb::Activate);
        assert!(matches!(
            run(&mut st, act, &a),
            Err(CeremonyError::NotAllowed(_))
        ));
        assert!(st.finish_rotation());
        assert_eq!(st.current.as_ref(), Some(&target));
        assert_eq!(st.keys().len(), 1);

        // Zeroize names the key it destroys; afterwards nothing key-related runs.
        let z = Command::new("ci", st.seq, Verb::Zeroize).with("verification_pattern", "vp");
        assert!(matches!(
            run(&mut st, z, &a),
            Err(CeremonyError::PartMismatch(_))
        ));
        let z = Command::new("ci", st.seq, Verb::Zeroize).with("verification_pattern", "vp2");
        run(&mut st, z, &a).unwrap();
        assert!(st.zeroized_at.is_some());
        let z = Command::new("ci", st.seq, Verb::Zeroize).with("verification_pattern", "vp2");
        assert!(matches!(
            run(&mut st, z, &a),
            Err(CeremonyError::NotAllowed(_))
        ));
        let act = Command::new("ci", st.seq, Verb::Commit);
        assert!(matches!(
            run(&mut st, act, &a),
            Err(CeremonyError::NotAllowed(_))
        ));
    }

    #[test]
    fn state_round_trips_as_json() {
        let st = CeremonyState::new("ci");
        let j = serde_json::to_vec(&st).unwrap();
        assert_eq!(serde_json::from_slice::<CeremonyState>(&j).unwrap(), st);
    }
}
