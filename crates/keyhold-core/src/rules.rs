//! The key lifecycle: which action each state allows (keyprotect-api.md Appendix C)
//! and the timing rules, each configurable so tests need not wait.

use crate::error::{Error, Reason, Result};
use crate::model::{KeyRecord, KeyState};
use crate::timefmt::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Get,
    Wrap,
    Unwrap,
    Rewrap,
    Rotate,
    Disable,
    Enable,
    Delete,
    Restore,
    Purge,
    SetKeyForDeletion,
    UnsetKeyForDeletion,
    Sync,
    Patch,
    SetPolicy,
    Alias,
}

impl KeyAction {
    fn verb(self) -> &'static str {
        match self {
            KeyAction::Get => "retrieved",
            KeyAction::Wrap => "wrapped",
            KeyAction::Unwrap => "unwrapped",
            KeyAction::Rewrap => "rewrapped",
            KeyAction::Rotate => "rotated",
            KeyAction::Disable => "disabled",
            KeyAction::Enable => "enabled",
            KeyAction::Delete => "deleted",
            KeyAction::Restore => "restored",
            KeyAction::Purge => "purged",
            KeyAction::SetKeyForDeletion | KeyAction::UnsetKeyForDeletion => "updated",
            KeyAction::Sync => "synced",
            KeyAction::Patch | KeyAction::SetPolicy | KeyAction::Alias => "updated",
        }
    }
}

/// Durations in seconds; `Default` gives Key Protect's production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingRules {
    pub rotate_min_interval: i64,
    pub action_cooldown: i64,
    pub purge_delay: i64,
    pub restore_window: i64,
    pub auto_purge_after: i64,
    pub dual_auth_validity: i64,
}

impl Default for TimingRules {
    fn default() -> Self {
        TimingRules {
            rotate_min_interval: 3600,
            action_cooldown: 30,
            purge_delay: 4 * 3600,
            restore_window: 30 * 86400,
            auto_purge_after: 90 * 86400,
            dual_auth_validity: 7 * 86400,
        }
    }
}

/// Checks the state × action table for `key` at `now`.
pub fn check_state(key: &KeyRecord, action: KeyAction, now: Timestamp) -> Result<()> {
    use KeyAction::*;
    use KeyState::*;
    let state = key.state_at(now);
    if state == Destroyed {
        return match action {
            Get | Restore | Purge => Ok(()),
            _ => Err(Error::key_deleted()),
        };
    }
    let allowed = match action {
        Get | Delete | Sync | Patch | SetPolicy | Alias | SetKeyForDeletion
        | UnsetKeyForDeletion => true,
        Wrap | Disable => state == Active,
        Unwrap | Rewrap | Rotate => matches!(state, Active | Deactivated),
        Enable => state == Suspended,
        Restore | Purge => false,
    };
    if allowed {
        return Ok(());
    }
    let why = match state {
        Suspended => "the key is disabled",
        Deactivated => "the key is deactivated (expired)",
        PreActivation => "the key is not yet active",
        Active => "the key is active",
        Destroyed => "the key is destroyed",
    };
    Err(Error::invalid_state(format!(
        "Key could not be {}: {why}",
        action.verb()
    )))
}

pub fn check_rotate_timing(key: &KeyRecord, rules: &TimingRules, now: Timestamp) -> Result<()> {
    let Some(last) = key.last_rotated_at else {
        return Ok(());
    };
    if now - last < rules.rotate_min_interval {
        return Err(Error::new(
            Reason::KeyRotationNotPermitted,
            "This root key has been rotated within the last hour: Only one 'rotate' action per hour is permitted",
        ));
    }
    Ok(())
}

/// Enable and restore must come at least `action_cooldown` after the last action.
pub fn check_cooldown(key: &KeyRecord, rules: &TimingRules, now: Timestamp) -> Result<()> {
    if now - key.last_action_at < rules.action_cooldown {
        return Err(Error::new(
            Reason::ReqTooEarly,
            format!(
                "The key was updated recently: wait {} seconds after the last action",
                rules.action_cooldown
            ),
        ));
    }
    Ok(())
}

pub fn check_restore(key: &KeyRecord, rules: &TimingRules, now: Timestamp) -> Result<()> {
    if key.state != KeyState::Destroyed {
        return Err(Error::invalid_state(
            "Key could not be restored: the key is not deleted",
        ));
    }
    let deleted_at = key.deleted_at.unwrap_or(key.last_action_at);
    if now - deleted_at >= rules.restore_window {
        return Err(Error::new(
            Reason::KeyRestoreExpired,
            "The key can no longer be restored: the restore window has passed",
        ));
    }
    if key.expiration.is_some_and(|e| e <= now) {
        return Err(Error::new(
            Reason::KeyExpired,
            "The key has expired and cannot be restored",
        ));
    }
    check_cooldown(key, rules, now)
}

pub fn check_purge(key: &KeyRecord, rules: &TimingRules, now: Timestamp) -> Result<()> {
    if key.state != KeyState::Destroyed {
        return Err(Error::invalid_state("Key is not in a valid state"));
    }
    let deleted_at = key.deleted_at.unwrap_or(key.last_action_at);
    if now - deleted_at < rules.purge_delay {
        let d = rules.purge_delay;
        return Err(Error::new(
            Reason::ReqTooEarly,
            format!(
                "Purge operation is allowed {}h{}m{}s after key is deleted",
                d / 3600,
                d % 3600 / 60,
                d % 60
            ),
        ));
    }
    Ok(())
}

/// True once a deleted key is past the automatic purge horizon.
pub fn due_for_auto_purge(key: &KeyRecord, rules: &TimingRules, now: Timestamp) -> bool {
    key.state == KeyState::Destroyed
        && key
            .deleted_at
            .is_some_and(|d| now - d >= rules.auto_purge_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VersionRef;

    fn key(state: KeyState) -> KeyRecord {
        KeyRecord {
            instance_id: "i".into(),
            id: "k".into(),
            name: "n".into(),
            description: None,
            tags: vec![],
            aliases: vec![],
            extractable: false,
            imported: false,
            state,
            expiration: None,
            key_ring: "default".into(),
            created_at: 1000,
            created_by: "u".into(),
            updated_at: 1000,
            last_rotated_at: None,
            last_action_at: 1000,
            deleted_at: if state == KeyState::Destroyed {
                Some(1000)
            } else {
                None
            },
            deleted_by: None,
            rotation: None,
            dual_auth: None,
            deletion_authorization: None,
            current_version: VersionRef {
                id: "v".into(),
                created_at: 1000,
            },
            version_count: 1,
            revision: 1,
        }
    }

    #[test]
    fn appendix_c_table() {
        use KeyAction::*;
        use KeyState::*;
        let table: &[(KeyAction, [bool; 4])] = &[
            (Get, [true, true, true, true]),
            (Rotate, [true, false, true, false]),
            (Wrap, [true, false, false, false]),
            (Unwrap, [true, false, true, false]),
            (Rewrap, [true, false, true, false]),
            (Disable, [true, false, false, false]),
            (Enable, [false, true, false, false]),
            (Delete, [true, true, true, false]),
            (Restore, [false, false, false, true]),
        ];
        for (action, expected) in table {
            for (i, state) in [Active, Suspended, Deactivated, Destroyed]
                .into_iter()
                .enumerate()
            {
                let got = check_state(&key(state), *action, 2000).is_ok();
                assert_eq!(got, expected[i], "{action:?} in {state:?}");
            }
        }
        assert_eq!(
            check_state(&key(Destroyed), Wrap, 2000).unwrap_err().reason,
            Reason::KeyDeleted
        );
        assert_eq!(
            check_state(&key(Suspended), Wrap, 2000).unwrap_err().reason,
            Reason::KeyActionInvalidState
        );
    }

    #[test]
    fn expiry_makes_a_key_deactivated() {
        let mut k = key(KeyState::Active);
        k.expiration = Some(1500);
        assert_eq!(k.state_at(1499), KeyState::Active);
        assert_eq!(k.state_at(1500), KeyState::Deactivated);
        assert!(check_state(&k, KeyAction::Wrap, 1600).is_err());
        assert!(check_state(&k, KeyAction::Unwrap, 1600).is_ok());
        assert!(check_state(&k, KeyAction::Enable, 1600).is_err());
    }

    #[test]
    fn timing_rules() {
        let rules = TimingRules::default();
        let mut k = key(KeyState::Active);
        assert!(
            check_rotate_timing(&k, &rules, 1001).is_ok(),
            "a new key may rotate at once"
        );
        k.last_rotated_at = Some(1000);
        assert_eq!(
            check_rotate_timing(&k, &rules, 1000 + 3599)
                .unwrap_err()
                .reason,
            Reason::KeyRotationNotPermitted
        );
        assert!(check_rotate_timing(&k, &rules, 1000 + 3600).is_ok());
        assert_eq!(
            check_cooldown(&k, &rules, 1029).unwrap_err().reason,
            Reason::ReqTooEarly
        );
        assert!(check_cooldown(&k, &rules, 1030).is_ok());
        let d = key(KeyState::Destroyed);
        assert_eq!(
            check_purge(&d, &rules, 1000 + 14399).unwrap_err().reason,
            Reason::ReqTooEarly
        );
        assert!(check_purge(&d, &rules, 1000 + 14400).is_ok());
        assert_eq!(
            check_purge(&k, &rules, 99999).unwrap_err().reason,
            Reason::KeyActionInvalidState
        );
        assert_eq!(
            check_restore(&d, &rules, 1000 + 30 * 86400)
                .unwrap_err()
                .reason,
            Reason::KeyRestoreExpired
        );
        assert!(check_restore(&d, &rules, 1000 + 30).is_ok());
        assert!(due_for_auto_purge(&d, &rules, 1000 + 90 * 86400));
    }
}
