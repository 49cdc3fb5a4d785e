//! Service roles and what each allows (keyprotect-api.md Appendix B).

/// Key Protect service roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reader,
    ReaderPlus,
    Writer,
    Manager,
    KeyPurge,
    KmipAdapterManager,
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    pub const NONE: Roles = Roles(0);

    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |acc, r| acc | Self::bit(*r)))
    }

    fn bit(r: Role) -> u8 {
        1 << (r as u8)
    }

    pub fn has(self, r: Role) -> bool {
        self.0 & Self::bit(r) != 0
    }

    pub fn union(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }

    fn any_of(self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.has(*r))
    }
}

/// What a request asks to do, in Appendix B's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    CreateKey,
    ReadKeyPayload,
    ReadKeyMetadata,
    ListKeys,
    ListKeyRings,
    Wrap,
    Rotate,
    EnableDisable,
    AuthorizeDeletion,
    DeleteRestorePatch,
    Sync,
    Purge,
    CreateKeyRing,
    DeleteKeyRing,
    ManagePolicies,
    ImportToken,
    Registrations,
    Aliases,
}

impl Permission {
    /// The roles that grant this permission.
    pub fn granted_by(self) -> &'static [Role] {
        use Role::*;
        match self {
            Permission::CreateKey
            | Permission::Rotate
            | Permission::AuthorizeDeletion
            | Permission::Sync => &[Writer, Manager],
            Permission::CreateKeyRing | Permission::ImportToken | Permission::Aliases => {
                &[Writer, Manager]
            }
            Permission::ReadKeyPayload => &[ReaderPlus, Writer, Manager],
            Permission::ReadKeyMetadata | Permission::Wrap | Permission::Registrations => {
                &[Reader, ReaderPlus, Writer, Manager]
            }
            Permission::ListKeys | Permission::ListKeyRings => {
                &[Reader, ReaderPlus, Writer, Manager, KmipAdapterManager]
            }
            Permission::EnableDisable | Permission::DeleteRestorePatch => &[Manager],
            Permission::DeleteKeyRing | Permission::ManagePolicies => &[Manager],
            Permission::Purge => &[KeyPurge],
        }
    }

    pub fn allowed(self, roles: Roles) -> bool {
        roles.any_of(self.granted_by())
    }
}

/// Platform roles on an account or an instance (Appendix B, last paragraph):
/// viewing instances, creating/deleting them, and managing access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformRole {
    Viewer,
    Operator,
    Editor,
    Administrator,
}

/// A set of platform roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlatformRoles(u8);

impl PlatformRoles {
    pub const NONE: PlatformRoles = PlatformRoles(0);
    pub const ALL: PlatformRoles = PlatformRoles(0b1111);

    pub fn of(roles: &[PlatformRole]) -> PlatformRoles {
        PlatformRoles(roles.iter().fold(0, |acc, r| acc | (1 << (*r as u8))))
    }

    pub fn has(self, r: PlatformRole) -> bool {
        self.0 & (1 << (r as u8)) != 0
    }

    pub fn union(self, other: PlatformRoles) -> PlatformRoles {
        PlatformRoles(self.0 | other.0)
    }

    /// Listing and reading instances: any platform role.
    pub fn may_view(self) -> bool {
        self.0 != 0
    }

    /// Creating, updating and deleting instances.
    pub fn may_edit(self) -> bool {
        self.has(PlatformRole::Editor) || self.has(PlatformRole::Administrator)
    }

    /// Managing access policies, authorizations and identities.
    pub fn may_administer(self) -> bool {
        self.has(PlatformRole::Administrator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appendix_b_samples() {
        let reader = Roles::of(&[Role::Reader]);
        assert!(Permission::Wrap.allowed(reader));
        assert!(Permission::ListKeys.allowed(reader));
        assert!(!Permission::ReadKeyPayload.allowed(reader));
        assert!(!Permission::CreateKey.allowed(reader));
        let manager = Roles::of(&[Role::Manager]);
        assert!(Permission::EnableDisable.allowed(manager));
        assert!(
            !Permission::Purge.allowed(manager),
            "purge needs KeyPurge explicitly"
        );
        assert!(Permission::Purge.allowed(Roles::of(&[Role::KeyPurge])));
        assert!(Permission::ListKeys.allowed(Roles::of(&[Role::KmipAdapterManager])));
        assert!(!Permission::Wrap.allowed(Roles::of(&[Role::KmipAdapterManager])));
        assert!(!Permission::ListKeys.allowed(Roles::NONE));
    }
}
