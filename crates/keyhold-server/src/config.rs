//! Server configuration, filled from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keyhold_core::rules::TimingRules;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The private network's listener, if any (allowedNetwork: private-only).
    pub private_listen: Option<SocketAddr>,
    /// host[:port] of the public / private endpoint in connection info; default
    /// the listen addresses.
    pub public_host: Option<String>,
    pub private_host: Option<String>,
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; SQLite in the data directory when unset.
    pub store: Option<String>,
    pub tls: Option<TlsFiles>,
    pub rules: TimingRules,
    /// Lifetime of issued access tokens.
    pub token_lifetime: Duration,
    /// Largest accepted request body.
    pub body_limit: usize,
    /// A request (reading it included) that takes longer is answered 408/503.
    pub request_timeout: Duration,
    /// A request waiting longer than this for the store is answered 503.
    pub store_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    pub idle_timeout: Duration,
    /// Answer every JSON body as `application/json` instead of Key Protect's vendor types.
    pub plain_json: bool,
    /// Root-key versions kept unwrapped in memory (or as HSM session objects).
    pub key_cache_entries: usize,
    /// Where the customer's master key comes from.
    pub master_key: MasterKeySource,
    /// Where the master key lives.
    pub crypto_unit: CryptoUnitConfig,
    /// Whether every call is recorded in the audit trail (docs/audit.md).
    pub audit: bool,
    /// Also write each audit record as a JSON line here (`-`: stdout).
    pub audit_log: Option<PathBuf>,
    /// A write to the audit store slower than this makes calls answer 503.
    pub audit_timeout: Duration,
    /// A signed checkpoint after this many events written by a node.
    pub audit_checkpoint_every: u64,
}

/// Where the customer's master key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKeySource {
    /// Dev mode: a file in the data directory (never for real keys), or with the
    /// PKCS#11 unit the HSM's own master key.
    File,
    /// The key ceremony: the node starts sealed until a quorum loads the key parts.
    Ceremony,
}

impl MasterKeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            MasterKeySource::File => "file",
            MasterKeySource::Ceremony => "ceremony",
        }
    }
}

/// The crypto unit of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoUnitConfig {
    /// In-process (aws-lc-rs); dev mode keeps its master key in the data directory.
    Soft,
    /// An HSM through a PKCS#11 module. The user PIN comes from `pin_file`, or
    /// else from the environment variable `KEYHOLD_PKCS11_PIN`; never from an
    /// argument (visible in `ps`).
    Pkcs11 {
        module: PathBuf,
        token: String,
        pin_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerConfig {
    pub fn dev_defaults(data_dir: PathBuf) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            private_listen: None,
            public_host: None,
            private_host: None,
            data_dir,
            store: None,
            tls: None,
            rules: TimingRules::default(),
            token_lifetime: Duration::from_secs(3600),
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            store_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(120),
            plain_json: false,
            key_cache_entries: keyhold_crypto::DEFAULT_CACHE_ENTRIES,
            master_key: MasterKeySource::File,
            crypto_unit: CryptoUnitConfig::Soft,
            audit: true,
            audit_log: None,
            audit_timeout: Duration::from_secs(2),
            audit_checkpoint_every: 1000,
        }
    }

    /// Plain HTTP is only allowed on loopback (DESIGN §4).
    pub fn check_transport(&self) -> Result<(), String> {
        for addr in std::iter::once(self.listen).chain(self.private_listen) {
            if self.tls.is_none() && !addr.ip().is_loopback() {
                return Err(format!(
                    "refusing to serve plain HTTP on {addr}: a non-loopback address needs TLS (--tls-cert and --tls-key)"
                ));
            }
        }
        Ok(())
    }
}
