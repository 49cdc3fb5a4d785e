//! The domain error: one Key Protect reason code, a message safe to show a caller,
//! and optionally the request field it refers to.

use std::fmt;

/// Key Protect reason codes (keyprotect-api.md §7.2) and the HTTP status of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    BadBody,
    NoBody,
    CollectionTotalMismatch,
    BodyQueryParamMismatch,
    NumCollectionResource,
    InvalidField,
    InvalidQueryParam,
    InvalidHeader,
    KeyRootReq,
    KeyPayloadReq,
    KeyExpired,
    KeyRestoreExpired,
    IncorrectNonce,
    IncorrectNonceIv,
    KeySearchTooBroad,
    Unauthorized,
    ServiceOnly,
    FeatureRestricted,
    KeyNotFound,
    KeyRingNotFound,
    AliasNotFound,
    ImportTokenNotFound,
    NotFound,
    KeyActionInvalidState,
    KeyRotationNotPermitted,
    ReqTooEarly,
    ProtectedResource,
    PrevKeyDel,
    AuthorizationsNotMet,
    NotDualAuth,
    KeyCreateImportAccess,
    ImportTokenExpired,
    DuplicateResource,
    KeyRingNotEmpty,
    AliasLimitReached,
    KeyDeleted,
    KeyInvalidState,
    KeyRootReqReg,
    UnprocessableCiphertext,
    KeyVersionInvalid,
    BodyTooLarge,
    MethodNotAllowed,
    TooManyRequests,
    Internal,
    Unavailable,
    /// The crypto unit holds no master key until the ceremony's quorum unseals it.
    CryptoUnitSealed,
    /// A ceremony command's signature does not verify, or its signer is no administrator.
    CeremonySignature,
    /// The ceremony command is not allowed in the ceremony's current state.
    CeremonyState,
    /// The ceremony command was prepared for an earlier sequence number.
    CeremonyStale,
    /// A key part that does not belong to the master key being loaded.
    KeyPartMismatch,
    /// This server takes its master key from a file, not from a ceremony.
    CeremonyDisabled,
    /// The crypto instance's master key was destroyed (crypto-shredding).
    MasterKeyZeroized,
    /// A key's stored material fails its integrity check (altered or swapped in the database).
    StoredKeyIntegrity,
    /// A key-management instance bound to a crypto instance lacks the
    /// service-to-service authorization (Reader) to use it.
    CryptoInstanceAuthorization,
    /// The instance's allowedNetwork policy admits only its private endpoint.
    PrivateNetworkOnly,
    /// An instance still in use (a crypto instance bound to a key-management
    /// instance, or a key-management instance holding keys).
    InstanceInUse,
    /// The audit trail cannot record the call now, so the call is refused.
    AuditUnavailable,
}

impl Reason {
    pub fn code(self) -> &'static str {
        use Reason::*;
        match self {
            BadBody => "BAD_BODY_ERR",
            NoBody => "NO_BODY_ERR",
            CollectionTotalMismatch => "COLLECTION_TOTAL_MISMATCH_ERR",
            BodyQueryParamMismatch => "BODY_QUERY_PARAM_MISMATCH_ERR",
            NumCollectionResource => "NUM_COLLECTION_RESOURCE_ERR",
            InvalidField => "INVALID_FIELD_ERR",
            InvalidQueryParam => "INVALID_QUERY_PARAM_ERR",
            InvalidHeader => "INVALID_HEADER_ERR",
            KeyRootReq => "KEY_ROOT_REQ_ERR",
            KeyPayloadReq => "KEY_PAYLOAD_REQ_ERR",
            KeyExpired => "KEY_EXPIRED_ERR",
            KeyRestoreExpired => "KEY_RESTORE_EXPIRED",
            IncorrectNonce => "INCORRECT_NONCE_ERR",
            IncorrectNonceIv => "INCORRECT_NONCE_IV_ERR",
            KeySearchTooBroad => "KEY_SEARCH_TOO_BROAD",
            Unauthorized => "UNAUTHORIZED_ERR",
            ServiceOnly => "SERVICE_ONLY_ERR",
            FeatureRestricted => "FEATURE_RESTRICTED_ERR",
            KeyNotFound => "KEY_NOT_FOUND_ERR",
            KeyRingNotFound => "KEY_RING_NOT_FOUND_ERR",
            AliasNotFound => "KEY_ALIAS_NOT_FOUND_ERR",
            ImportTokenNotFound => "IMPORT_TOKEN_NOT_FOUND_ERR",
            NotFound => "NOT_FOUND_ERR",
            KeyActionInvalidState => "KEY_ACTION_INVALID_STATE_ERR",
            KeyRotationNotPermitted => "KEY_ROTATION_NOT_PERMITTED",
            ReqTooEarly => "REQ_TOO_EARLY_ERR",
            ProtectedResource => "PROTECTED_RESOURCE_ERR",
            PrevKeyDel => "PREV_KEY_DEL_ERR",
            AuthorizationsNotMet => "AUTHORIZATIONS_NOT_MET",
            NotDualAuth => "NOT_DUAL_AUTH_ERR",
            KeyCreateImportAccess => "KEY_CREATE_IMPORT_ACCESS_ERR",
            ImportTokenExpired => "IMPORT_TOKEN_EXPIRED_ERR",
            DuplicateResource => "DUPLICATE_RESOURCE_ERR",
            KeyRingNotEmpty => "KEY_RING_NOT_EMPTY_ERR",
            AliasLimitReached => "KEY_ALIAS_QUOTA_ERR",
            KeyDeleted => "KEY_DELETED_ERR",
            KeyInvalidState => "KEY_INVALID_STATE_ERR",
            KeyRootReqReg => "KEY_ROOT_REQ_REG_ERR",
            UnprocessableCiphertext => "UNPROCESSABLE_CIPHERTEXT_ERR",
            KeyVersionInvalid => "KEY_VERSION_INVALID",
            BodyTooLarge => "BODY_TOO_LARGE_ERR",
            MethodNotAllowed => "METHOD_NOT_ALLOWED_ERR",
            TooManyRequests => "TOO_MANY_REQUESTS_ERR",
            Internal => "INTERNAL_SERVER_ERR",
            Unavailable => "SERVICE_UNAVAILABLE_ERR",
            CryptoUnitSealed => "CRYPTO_UNIT_SEALED_ERR",
            CeremonySignature => "CEREMONY_SIGNATURE_ERR",
            CeremonyState => "CEREMONY_STATE_ERR",
            CeremonyStale => "CEREMONY_STALE_COMMAND_ERR",
            KeyPartMismatch => "KEY_PART_MISMATCH_ERR",
            CeremonyDisabled => "CEREMONY_DISABLED_ERR",
            MasterKeyZeroized => "MASTER_KEY_ZEROIZED_ERR",
            StoredKeyIntegrity => "STORED_KEY_INTEGRITY_ERR",
            CryptoInstanceAuthorization => "CRYPTO_INSTANCE_AUTHORIZATION_ERR",
            PrivateNetworkOnly => "PRIVATE_NETWORK_ONLY_ERR",
            InstanceInUse => "INSTANCE_IN_USE_ERR",
            AuditUnavailable => "AUDIT_UNAVAILABLE_ERR",
        }
    }

    pub fn status(self) -> u16 {
        use Reason::*;
        match self {
            BadBody
            | NoBody
            | CollectionTotalMismatch
            | BodyQueryParamMismatch
            | NumCollectionResource
            | InvalidField
            | InvalidQueryParam
            | InvalidHeader
            | KeyRootReq
            | KeyPayloadReq
            | KeyExpired
            | KeyRestoreExpired
            | IncorrectNonce
            | IncorrectNonceIv
            | KeySearchTooBroad
            | AliasLimitReached => 400,
            Unauthorized => 401,
            ServiceOnly
            | FeatureRestricted
            | CeremonySignature
            | CryptoInstanceAuthorization
            | PrivateNetworkOnly => 403,
            KeyNotFound | KeyRingNotFound | AliasNotFound | ImportTokenNotFound | NotFound => 404,
            MethodNotAllowed => 405,
            KeyActionInvalidState
            | KeyRotationNotPermitted
            | ReqTooEarly
            | ProtectedResource
            | PrevKeyDel
            | AuthorizationsNotMet
            | NotDualAuth
            | KeyCreateImportAccess
            | ImportTokenExpired
            | DuplicateResource
            | KeyRingNotEmpty
            | CeremonyState
            | CeremonyStale
            | CeremonyDisabled
            | InstanceInUse
            // The key's stored state conflicts with any use of it; the client caused
            // nothing and a retry cannot help, so neither 4xx-for-input nor 5xx fits better.
            | StoredKeyIntegrity => 409,
            // Gone for good, like a deleted key: retrying cannot help (503 would say it can).
            KeyDeleted | MasterKeyZeroized => 410,
            BodyTooLarge => 413,
            KeyInvalidState
            | KeyRootReqReg
            | UnprocessableCiphertext
            | KeyVersionInvalid
            | KeyPartMismatch => 422,
            TooManyRequests => 429,
            Internal => 500,
            Unavailable | CryptoUnitSealed | AuditUnavailable => 503,
        }
    }
}

/// A failure a caller may see. `message` never contains secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub reason: Reason,
    pub message: String,
    /// The request field the error is about (`target: {"type":"field","name":…}`).
    pub field: Option<&'static str>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Error {
            reason,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(reason: Reason, field: &'static str, message: impl Into<String>) -> Self {
        Error {
            reason,
            message: message.into(),
            field: Some(field),
        }
    }

    /// `INVALID_FIELD_ERR` in the wording Key Protect uses: "The field `x` must be: …".
    pub fn invalid_field(field: &'static str, must_be: &str) -> Self {
        Self::field(
            Reason::InvalidField,
            field,
            format!("The field `{field}` must be: {must_be}"),
        )
    }

    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(Reason::BadBody, message)
    }

    pub fn invalid_query(param: &str, must_be: &str) -> Self {
        Self::new(
            Reason::InvalidQueryParam,
            format!("The query_param `{param}` must be: {must_be}"),
        )
    }

    pub fn key_not_found() -> Self {
        Self::new(Reason::KeyNotFound, "key does not exist")
    }

    pub fn key_deleted() -> Self {
        Self::new(
            Reason::KeyDeleted,
            "Key has already been deleted. Please delete references to this key.",
        )
    }

    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(Reason::KeyActionInvalidState, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            Reason::Unauthorized,
            "The user does not have access to the specified resource",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            Reason::Internal,
            "An internal error occurred; it has been logged",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Reason::Unavailable, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.message)
    }
}

impl std::error::Error for Error {}
