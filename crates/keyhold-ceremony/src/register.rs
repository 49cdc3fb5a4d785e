//! The registers a node keeps in memory: the new-master-key register
//! (`Empty → PartiallyLoaded → FullUncommitted → Committed`, then activate) and
//! the unseal register (the current key's parts loaded again after a restart).
//! Parts are wiped when a register is cleared or dropped.

use serde::Serialize;

use crate::part::{combine, master_pattern, part_pattern};
use crate::state::{CurrentKey, PartRecord};
use crate::{CeremonyError, Result, Secret32};

pub const MIN_PARTS: u8 = 2;
pub const MAX_PARTS: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterState {
    Empty,
    PartiallyLoaded,
    FullUncommitted,
    Committed,
}

struct Loaded {
    holder: String,
    pattern: String,
    part: Secret32,
}

/// What status shows of a register: holders and patterns, never parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisterView {
    pub state: RegisterState,
    pub parts_total: u8,
    pub parts_loaded: Vec<PartRecord>,
    /// The pattern of the combined key, once every part is loaded.
    pub verification_pattern: Option<String>,
    /// Unseal only: administrators who approved without loading a part.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<String>,
}

#[derive(Default)]
pub struct NewRegister {
    parts_total: u8,
    parts: Vec<Loaded>,
    committed: bool,
}

impl NewRegister {
    pub fn state(&self) -> RegisterState {
        if self.parts.is_empty() {
            RegisterState::Empty
        } else if self.parts.len() < usize::from(self.parts_total) {
            RegisterState::PartiallyLoaded
        } else if self.committed {
            RegisterState::Committed
        } else {
            RegisterState::FullUncommitted
        }
    }

    /// Loads one part. Each part comes from a different administrator.
    pub fn load(&mut self, holder: &str, part: Secret32, parts_total: u8) -> Result<()> {
        if !(MIN_PARTS..=MAX_PARTS).contains(&parts_total) {
            return Err(CeremonyError::Malformed(format!(
                "a master key has {MIN_PARTS} or {MAX_PARTS} parts"
            )));
        }
        match self.state() {
            RegisterState::Empty => self.parts_total = parts_total,
            RegisterState::PartiallyLoaded if parts_total == self.parts_total => {}
            RegisterState::PartiallyLoaded => {
                return Err(CeremonyError::NotAllowed(format!(
                    "the new master key register is being loaded with {} parts, not {parts_total}",
                    self.parts_total
                )))
            }
            _ => {
                return Err(CeremonyError::NotAllowed(
                    "the new master key register is full; commit and activate it, or clear it"
                        .into(),
                ))
            }
        }
        if self.parts.iter().any(|p| p.holder == holder) {
            return Err(CeremonyError::NotAllowed(format!(
                "administrator {holder:?} already loaded a part; each part is loaded by a different administrator"
            )));
        }
        let pattern = part_pattern(&part);
        if self.parts.iter().any(|p| p.pattern == pattern) {
            return Err(CeremonyError::PartMismatch(
                "this key part is already loaded; each part must be different".into(),
            ));
        }
        self.parts.push(Loaded {
            holder: holder.into(),
            pattern,
            part,
        });
        Ok(())
    }

    pub fn pattern(&self) -> Option<String> {
        matches!(
            self.state(),
            RegisterState::FullUncommitted | RegisterState::Committed
        )
        .then(|| master_pattern(&combine(self.parts.iter().map(|p| &*p.part))))
    }

    /// Commits the full register; `expected` is the pattern the signers saw.
    pub fn check_commit(&self, expected: &str) -> Result<()> {
        if self.state() != RegisterState::FullUncommitted {
            return Err(CeremonyError::NotAllowed(format!(
                "commit needs a full, uncommitted new master key register; it is {:?}",
                self.state()
            )));
        }
        self.check_pattern(expected)
    }

    fn check_pattern(&self, expected: &str) -> Result<()> {
        if self.pattern().as_deref() != Some(expected) {
            return Err(CeremonyError::PartMismatch(
                "the verification pattern signed does not match the new master key register's"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn commit(&mut self, expected: &str) -> Result<()> {
        self.check_commit(expected)?;
        self.committed = true;
        Ok(())
    }

    pub fn check_activate(&self, expected: &str) -> Result<()> {
        if self.state() != RegisterState::Committed {
            return Err(CeremonyError::NotAllowed(format!(
                "activate needs a committed new master key register; it is {:?}",
                self.state()
            )));
        }
        self.check_pattern(expected)
    }

    /// The committed key and the record to store; the caller clears the
    /// register once the record is durable.
    pub fn committed(&self, now: i64) -> Result<(Secret32, CurrentKey)> {
        if self.state() != RegisterState::Committed {
            return Err(CeremonyError::NotAllowed(
                "the new master key register is not committed".into(),
            ));
        }
        let key = combine(self.parts.iter().map(|p| &*p.part));
        let record = CurrentKey {
            verification_pattern: master_pattern(&key),
            parts: self.records(),
            activated_at: now,
        };
        Ok((key, record))
    }

    fn records(&self) -> Vec<PartRecord> {
        self.parts
            .iter()
            .map(|p| PartRecord {
                holder: p.holder.clone(),
                verification_pattern: p.pattern.clone(),
            })
            .collect()
    }

    pub fn clear(&mut self) {
        *self = NewRegister::default();
    }

    pub fn view(&self) -> RegisterView {
        RegisterView {
            state: self.state(),
            parts_total: self.parts_total,
            parts_loaded: self.records(),
            verification_pattern: self.pattern(),
            approved_by: Vec::new(),
        }
    }
}

/// Loading the current key's parts again after a restart. The unit unseals
/// when every part is in and at least the signature threshold of distinct
/// administrators took part: the part holders, plus administrators who
/// approve without a part when the holders alone are fewer than the threshold.
///
/// In the middle of a master-key rotation two keys are needed (the old one
/// still opens the blobs not re-wrapped yet): the parts of both are loaded,
/// each matched to its key by its verification pattern, and
/// [`UnsealRegister::take_if_quorum`] returns the keys in the order given.
#[derive(Default)]
pub struct UnsealRegister {
    /// Each loaded part with the index of the key it belongs to.
    parts: Vec<(usize, Loaded)>,
    approvers: Vec<String>,
    /// The combined, checked keys, waiting for the quorum.
    keys: Option<Vec<Secret32>>,
}

impl UnsealRegister {
    /// Loads one part; it must be a part of one of `keys` not loaded yet.
    /// A refused part leaves the register as it was.
    pub fn load(&mut self, keys: &[&CurrentKey], holder: &str, part: Secret32) -> Result<()> {
        let pattern = part_pattern(&part);
        if self.parts.iter().any(|(_, p)| p.pattern == pattern) {
            return Err(CeremonyError::NotAllowed(
                "this key part is already loaded for unsealing".into(),
            ));
        }
        let Some(idx) = keys
            .iter()
            .position(|k| k.parts.iter().any(|r| r.verification_pattern == pattern))
        else {
            let wanted: Vec<&str> = keys
                .iter()
                .map(|k| k.verification_pattern.as_str())
                .collect();
            let which = if keys.len() > 1 {
                "the current master key or of the one it is being rotated to"
            } else {
                "the current master key"
            };
            return Err(CeremonyError::PartMismatch(format!(
                "this key part (verification pattern {pattern}) is not a part of {which} (verification pattern {}); nothing was loaded",
                wanted.join(" or ")
            )));
        };
        if self
            .parts
            .iter()
            .any(|(i, p)| *i == idx && p.holder == holder)
        {
            return Err(CeremonyError::NotAllowed(format!(
                "administrator {holder:?} already loaded a part; each part is loaded by a different administrator"
            )));
        }
        self.parts.push((
            idx,
            Loaded {
                holder: holder.into(),
                pattern,
                part,
            },
        ));
        let complete = keys
            .iter()
            .enumerate()
            .all(|(i, k)| self.parts.iter().filter(|(j, _)| *j == i).count() >= k.parts.len());
        if !complete {
            return Ok(());
        }
        let mut combined = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let key = combine(
                self.parts
                    .iter()
                    .filter(|(j, _)| *j == i)
                    .map(|(_, p)| &*p.part),
            );
            if master_pattern(&key) != k.verification_pattern {
                self.clear();
                return Err(CeremonyError::PartMismatch(
                    "the combined parts do not give the master key's verification pattern; the unseal register was cleared".into(),
                ));
            }
            combined.push(key);
        }
        // The parts are no longer needed: keep only the keys.
        for (_, p) in &mut self.parts {
            zeroize::Zeroize::zeroize(&mut *p.part);
        }
        self.keys = Some(combined);
        Ok(())
    }

    /// Records an administrator's approval (signed by them) without a part.
    pub fn approve(&mut self, admin: &str) -> Result<()> {
        if self.signers().contains(&admin) {
            return Err(CeremonyError::NotAllowed(format!(
                "administrator {admin:?} already took part in this unseal"
            )));
        }
        self.approvers.push(admin.into());
        Ok(())
    }

    /// Distinct administrators who loaded a part or approved.
    fn signers(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for a in self
            .parts
            .iter()
            .map(|(_, p)| p.holder.as_str())
            .chain(self.approvers.iter().map(String::as_str))
        {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// The master keys, once every part is in and `threshold` administrators
    /// took part; the register is then empty.
    pub fn take_if_quorum(&mut self, threshold: usize) -> Option<Vec<Secret32>> {
        if self.keys.is_none() || self.signers().len() < threshold {
            return None;
        }
        let keys = self.keys.take();
        self.clear();
        keys
    }

    pub fn clear(&mut self) {
        self.parts.clear();
        self.approvers.clear();
        self.keys = None;
    }

    pub fn view(&self, keys: &[&CurrentKey]) -> RegisterView {
        let total = keys.iter().map(|c| c.parts.len() as u8).sum();
        RegisterView {
            state: if self.keys.is_some() {
                RegisterState::FullUncommitted
            } else if self.parts.is_empty() {
                RegisterState::Empty
            } else {
                RegisterState::PartiallyLoaded
            },
            parts_total: total,
            parts_loaded: self
                .parts
                .iter()
                .map(|(_, p)| PartRecord {
                    holder: p.holder.clone(),
                    verification_pattern: p.pattern.clone(),
                })
                .collect(),
            verification_pattern: None,
            approved_by: self.approvers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn part(b: u8) -> Secret32 {
        Zeroizing::new([b; 32])
    }

    #[test]
    fn new_register_walks_its_states() {
        let mut r = NewRegister::default();
        assert_eq!(r.state(), RegisterState::Empty);
        assert!(r.load("alice", part(1), 4).is_err());
        r.load("alice", part(1), 2).unwrap();
        assert_eq!(r.state(), RegisterState::PartiallyLoaded);
        assert!(r.pattern().is_none());
        assert!(r.load("alice", part(2), 2).is_err());
        assert!(r.load("bob", part(1), 2).is_err());
        assert!(r.check_commit("x").is_err());
        r.load("bob", part(2), 2).unwrap();
        assert_eq!(r.state(), RegisterState::FullUncommitted);
        let vp = r.pattern().unwrap();
        assert!(r.load("carol", part(3), 2).is_err());
        assert!(r.commit("wrong").is_err());
        assert!(r.check_activate(&vp).is_err());
        r.commit(&vp).unwrap();
        assert_eq!(r.state(), RegisterState::Committed);
        r.check_activate(&vp).unwrap();
        let (key, rec) = r.committed(7).unwrap();
        r.clear();
        assert_eq!(*key, [3u8; 32]);
        assert_eq!(rec.verification_pattern, vp);
        assert_eq!(rec.parts.len(), 2);
        assert_eq!(r.state(), RegisterState::Empty);
    }

    #[test]
    fn unseal_refuses_a_wrong_part_and_keeps_the_rest() {
        let mut r = NewRegister::default();
        r.load("alice", part(1), 2).unwrap();
        r.load("bob", part(2), 2).unwrap();
        let vp = r.pattern().unwrap();
        r.commit(&vp).unwrap();
        let (_, current) = r.committed(0).unwrap();

        let mut u = UnsealRegister::default();
        u.load(&[&current], "alice", part(1)).unwrap();
        assert!(u.take_if_quorum(2).is_none());
        assert!(matches!(
            u.load(&[&current], "bob", part(9)),
            Err(CeremonyError::PartMismatch(_))
        ));
        assert_eq!(u.view(&[&current]).parts_loaded.len(), 1);
        u.load(&[&current], "bob", part(2)).unwrap();
        let key = u.take_if_quorum(2).unwrap();
        assert_eq!(*key[0], [3u8; 32]);
        assert_eq!(u.view(&[&current]).state, RegisterState::Empty);
    }

    #[test]
    fn unseal_waits_for_the_threshold_of_administrators() {
        let mut r = NewRegister::default();
        r.load("alice", part(1), 2).unwrap();
        r.load("bob", part(2), 2).unwrap();
        let vp = r.pattern().unwrap();
        r.commit(&vp).unwrap();
        let (_, current) = r.committed(0).unwrap();

        let mut u = UnsealRegister::default();
        u.approve("carol").unwrap();
        assert!(u.approve("carol").is_err());
        u.load(&[&current], "alice", part(1)).unwrap();
        u.load(&[&current], "bob", part(2)).unwrap();
        // Threshold 4: alice, bob and carol are not enough; dave makes it.
        assert!(u.take_if_quorum(4).is_none());
        assert!(u.approve("alice").is_err());
        u.approve("dave").unwrap();
        assert_eq!(*u.take_if_quorum(4).unwrap()[0], [3u8; 32]);
    }

    #[test]
    fn unseal_mid_rotation_needs_both_keys() {
        let rec = |a: u8, b: u8| {
            let mut r = NewRegister::default();
            r.load("alice", part(a), 2).unwrap();
            r.load("bob", part(b), 2).unwrap();
            let vp = r.pattern().unwrap();
            r.commit(&vp).unwrap();
            r.committed(0).unwrap().1
        };
        let (old, new) = (rec(1, 2), rec(4, 8));
        let keys = [&old, &new];
        let mut u = UnsealRegister::default();
        u.load(&keys, "alice", part(1)).unwrap();
        // The same administrator holds a part of each key.
        u.load(&keys, "alice", part(4)).unwrap();
        assert!(u.load(&keys, "alice", part(2)).is_err());
        u.load(&keys, "bob", part(2)).unwrap();
        assert!(u.take_if_quorum(2).is_none());
        assert!(matches!(
            u.load(&keys, "bob", part(9)),
            Err(CeremonyError::PartMismatch(_))
        ));
        u.load(&keys, "bob", part(8)).unwrap();
        assert_eq!(u.view(&keys).parts_total, 4);
        let got = u.take_if_quorum(2).unwrap();
        assert_eq!(*got[0], [3u8; 32]);
        assert_eq!(*got[1], [12u8; 32]);
    }
}
