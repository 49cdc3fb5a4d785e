//! The `keyhold` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keyhold_server::config::{CryptoUnitConfig, MasterKeySource, ServerConfig, TlsFiles};

mod ceremony_cli;
mod cli;
mod log_writer;

#[derive(Parser)]
#[command(
    name = "keyhold",
    version,
    about = "Keyhold: a key management service that speaks the IBM Key Protect v2 API",
    long_about = "Keyhold keeps root keys inside a crypto unit and serves the IBM Key Protect v2 REST API, \
so the Key Protect clients (Python keyprotect, Node @ibm-cloud/ibm-key-protect, the Go client) work against it.\n\n\
Quick start:\n  keyhold serve --dev                 # serves http://127.0.0.1:8080, writes ./keyhold-data/dev.json\n  \
keyhold profiles add dev --dev-json keyhold-data/dev.json --default\n  \
keyhold keys create my-root-key\n  \
keyhold encrypt --key my-root-key big.iso big.iso.khe && keyhold decrypt big.iso.khe big.iso",
    after_help = cli::EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Key Protect v2 API server.
    Serve(ServeArgs),
    /// Initialise a new (non-dev) deployment: its account and first administrator,
    /// whose API key is printed once.
    Init(InitArgs),
    /// Load-test a Keyhold server, OpenBao's transit engine or a baseline endpoint
    /// (throughput, latency percentiles, error counts).
    Bench(keyhold_bench::BenchArgs),
    /// The master-key ceremony (Keep Your Own Key): administrators, thresholds,
    /// key parts, commit, activate, unseal, status.
    Ceremony(ceremony_cli::CeremonyArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Args)]
#[command(
    after_help = "Prints, once, on stdout: {\"account_id\", \"iam_id\", \"apikey_id\", \"apikey\"}. The API key \
is the first administrator's (Administrator platform role, Manager and KeyPurge service roles on the \
whole account); it is shown only now and never logged. Running init again on the same store refuses.\n\n\
Examples:\n  keyhold init --data-dir /var/lib/keyhold > admin.json && chmod 600 admin.json\n  \
keyhold init --data-dir /var/lib/keyhold --store postgres://keyhold@db:5432/keyhold\n  \
keyhold serve --data-dir /var/lib/keyhold --master-key ceremony"
)]
struct InitArgs {
    /// Where the store lives (and, later, the server's data).
    #[arg(long, default_value = "keyhold-data", env = "KEYHOLD_DATA_DIR")]
    data_dir: PathBuf,
    /// The store: sqlite://PATH or postgres://USER@HOST:PORT/DB[?schema=NAME]; default
    /// SQLite in --data-dir.
    #[arg(long, env = "KEYHOLD_STORE", value_name = "URL")]
    store: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum MasterKeyArg {
    /// A master key file in the data directory (dev mode; never for real keys).
    File,
    /// Loaded by the key ceremony; the server starts sealed until a quorum unseals it.
    Ceremony,
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  keyhold serve --dev\n  keyhold serve --dev --listen 127.0.0.1:0 --data-dir /tmp/kh --rotate-min-interval 0\n  \
keyhold serve --dev --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem\n  \
keyhold serve --dev --private-listen 127.0.0.1:8081 --public-host kms.example.com:8443\n  \
keyhold serve --dev --master-key ceremony   # master key from the key ceremony (keyhold ceremony --help)\n  \
keyhold init --data-dir /srv/kh && keyhold serve --data-dir /srv/kh --master-key ceremony   # not dev\n  \
keyhold serve --dev --crypto-unit pkcs11 --pkcs11-module /usr/lib/softhsm/libsofthsm2.so \\\n      \
--pkcs11-token keyhold --pkcs11-pin-file pin.txt      # or KEYHOLD_PKCS11_PIN=... in the environment"
)]
struct ServeArgs {
    /// Development mode: SQLite store in --data-dir and, with --crypto-unit soft, a software
    /// crypto unit whose master key is kept in a file there (never for real keys). Creates a
    /// key-management instance and admin API keys on first start and writes them to
    /// DATA_DIR/dev.json. Without --dev, serves a store initialised by `keyhold init`
    /// (with --master-key ceremony or --crypto-unit pkcs11).
    #[arg(long)]
    dev: bool,
    /// Where the master key lives: soft (in this process; dev mode keeps it in --data-dir) or
    /// pkcs11 (an HSM token; root keys are used inside it and never leave it in plain form).
    #[arg(long, value_enum, default_value_t = UnitKind::Soft, env = "KEYHOLD_CRYPTO_UNIT", value_name = "UNIT")]
    crypto_unit: UnitKind,
    /// The PKCS#11 module (shared library) for --crypto-unit pkcs11,
    /// e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, env = "KEYHOLD_PKCS11_MODULE", value_name = "PATH")]
    pkcs11_module: Option<PathBuf>,
    /// The label of the PKCS#11 token (slot numbers are not stable; the label is).
    /// Dev mode creates the master key "keyhold-master" and the MAC key "keyhold-mac" on it
    /// when absent.
    #[arg(long, env = "KEYHOLD_PKCS11_TOKEN", value_name = "LABEL")]
    pkcs11_token: Option<String>,
    /// A file holding the token's user PIN (trailing newline ignored). Without it the PIN is
    /// read from the environment variable KEYHOLD_PKCS11_PIN. There is no PIN argument:
    /// arguments are visible to every user in `ps`.
    #[arg(long, env = "KEYHOLD_PKCS11_PIN_FILE", value_name = "PATH")]
    pkcs11_pin_file: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (the URL is printed and written to dev.json).
    #[arg(long, default_value = "127.0.0.1:8080", env = "KEYHOLD_LISTEN")]
    listen: SocketAddr,
    /// A second, private listener (the private network's endpoint): instances whose
    /// allowedNetwork policy is private-only answer only there (403 PRIVATE_NETWORK_ONLY_ERR
    /// on --listen).
    #[arg(long, env = "KEYHOLD_PRIVATE_LISTEN", value_name = "ADDR")]
    private_listen: Option<SocketAddr>,
    /// The public endpoint's host[:port] that connection info reports
    /// (GET /crypto_v2/instances/ID). Default: the --listen address.
    #[arg(long, env = "KEYHOLD_PUBLIC_HOST", value_name = "HOST:PORT")]
    public_host: Option<String>,
    /// The private endpoint's host[:port] that connection info reports. Default: the
    /// --private-listen address, else the public host.
    #[arg(long, env = "KEYHOLD_PRIVATE_HOST", value_name = "HOST:PORT")]
    private_host: Option<String>,
    /// Where the store, the dev master key and dev.json live.
    #[arg(long, default_value = "keyhold-data", env = "KEYHOLD_DATA_DIR")]
    data_dir: PathBuf,
    /// The store: sqlite://PATH, or postgres://USER@HOST:PORT/DB[?schema=NAME] for several
    /// nodes over one PostgreSQL (nodes given the same --data-dir and URL form one
    /// deployment). Default: SQLite in --data-dir.
    #[arg(long, env = "KEYHOLD_STORE", value_name = "URL")]
    store: Option<String>,
    /// TLS certificate chain (PEM). Required with --tls-key for any non-loopback address.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds between two rotations of a key (Key Protect: one per hour).
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    rotate_min_interval: i64,
    /// Seconds that enable and restore must wait after the key's last action.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    action_cooldown: i64,
    /// Seconds after deletion before a key may be purged (Key Protect: 4 hours).
    #[arg(long, default_value_t = 14400, value_name = "SECS")]
    purge_delay: i64,
    /// Seconds after deletion during which a key may be restored (30 days).
    #[arg(long, default_value_t = 2_592_000, value_name = "SECS")]
    restore_window: i64,
    /// Seconds after deletion when a key is purged automatically (90 days).
    #[arg(long, default_value_t = 7_776_000, value_name = "SECS")]
    auto_purge_after: i64,
    /// Seconds a dual-authorization deletion approval stays valid (7 days).
    #[arg(long, default_value_t = 604_800, value_name = "SECS")]
    dual_auth_validity: i64,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    token_lifetime: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    body_limit: usize,
    /// Seconds a request (including reading its body) may take before it is abandoned.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    request_timeout: u64,
    /// Seconds a request waits for the store before it is answered 503 SERVICE_UNAVAILABLE_ERR
    /// (a hung or unreachable database never hangs a client).
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    store_timeout: u64,
    /// Answer every JSON body as application/json instead of Key Protect's
    /// application/vnd.ibm.kms.* types for create, restore, wrap, unwrap and rewrap.
    #[arg(long)]
    plain_json: bool,
    /// Root-key versions kept unwrapped in memory (least recently used are dropped and zeroized),
    /// or, with the PKCS#11 unit, as HSM session objects (evicted ones are destroyed).
    #[arg(long, default_value_t = 10_000)]
    key_cache_entries: usize,
    /// Where the master key comes from: `file` (dev: a file in --data-dir; with
    /// --crypto-unit pkcs11, the HSM's own key) or `ceremony` (administrators load key parts;
    /// see `keyhold ceremony --help`; the server starts sealed and key operations answer 503
    /// CRYPTO_UNIT_SEALED_ERR until unsealed; soft unit only for now).
    #[arg(long, value_enum, default_value = "file", env = "KEYHOLD_MASTER_KEY")]
    master_key: MasterKeyArg,
    /// The tamper-evident audit trail (docs/audit.md): `on` records every call in a
    /// hash chain with signed checkpoints (management calls are durable before they are
    /// answered; a sink that cannot be written answers 503 AUDIT_UNAVAILABLE_ERR); `off`
    /// records nothing (for benchmark comparisons only; logged as a warning).
    #[arg(long, value_enum, default_value = "on", env = "KEYHOLD_AUDIT")]
    audit: AuditArg,
    /// Also write each audit record as a JSON line to PATH (appended), or to stdout with `-`,
    /// for a SIEM.
    #[arg(long, env = "KEYHOLD_AUDIT_LOG", value_name = "PATH|-")]
    audit_log: Option<PathBuf>,
    /// Seconds a write to the audit store may take before calls are answered 503.
    #[arg(long, default_value_t = 2, value_name = "SECS")]
    audit_timeout: u64,
    /// A signed audit checkpoint after this many events written by this node (and at the
    /// latest every 30 s while events are written).
    #[arg(long, default_value_t = 1000, value_name = "EVENTS")]
    audit_checkpoint_every: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuditArg {
    On,
    Off,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UnitKind {
    Soft,
    Pkcs11,
}

fn crypto_unit(a: &ServeArgs) -> Result<CryptoUnitConfig, String> {
    match a.crypto_unit {
        UnitKind::Soft => Ok(CryptoUnitConfig::Soft),
        UnitKind::Pkcs11 => Ok(CryptoUnitConfig::Pkcs11 {
            module: a
                .pkcs11_module
                .clone()
                .ok_or("--crypto-unit pkcs11 needs --pkcs11-module (KEYHOLD_PKCS11_MODULE)")?,
            token: a
                .pkcs11_token
                .clone()
                .ok_or("--crypto-unit pkcs11 needs --pkcs11-token (KEYHOLD_PKCS11_TOKEN)")?,
            pin_file: a.pkcs11_pin_file.clone(),
        }),
    }
}

fn config(a: ServeArgs) -> Result<ServerConfig, String> {
    let unit = crypto_unit(&a)?;
    let mut cfg = ServerConfig::dev_defaults(a.data_dir);
    cfg.listen = a.listen;
    cfg.private_listen = a.private_listen;
    cfg.public_host = a.public_host;
    cfg.private_host = a.private_host;
    cfg.store = a.store;
    cfg.tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    cfg.rules.rotate_min_interval = a.rotate_min_interval;
    cfg.rules.action_cooldown = a.action_cooldown;
    cfg.rules.purge_delay = a.purge_delay;
    cfg.rules.restore_window = a.restore_window;
    cfg.rules.auto_purge_after = a.auto_purge_after;
    cfg.rules.dual_auth_validity = a.dual_auth_validity;
    cfg.token_lifetime = Duration::from_secs(a.token_lifetime);
    cfg.body_limit = a.body_limit;
    cfg.request_timeout = Duration::from_secs(a.request_timeout.max(1));
    cfg.plain_json = a.plain_json;
    cfg.store_timeout = Duration::from_secs(a.store_timeout.max(1));
    cfg.key_cache_entries = a.key_cache_entries;
    cfg.master_key = match a.master_key {
        MasterKeyArg::File => MasterKeySource::File,
        MasterKeyArg::Ceremony => MasterKeySource::Ceremony,
    };
    cfg.crypto_unit = unit;
    cfg.audit = a.audit == AuditArg::On;
    cfg.audit_log = a.audit_log;
    cfg.audit_timeout = Duration::from_secs(a.audit_timeout.max(1));
    cfg.audit_checkpoint_every = a.audit_checkpoint_every.max(1);
    Ok(cfg)
}

/// glibc gives each thread that allocates an arena of its own (up to eight per core) and
/// seldom hands freed memory back, so tokio's blocking pool, whose threads come and go,
/// spreads the key cache's churn over many arenas. Two arenas keep the server's resident
/// memory about 15% lower when the keys in use outnumber the cache (docs/benchmarks.md,
/// "Many keys"). `MALLOC_ARENA_MAX` in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: runs first in main, before any other thread exists; mallopt only
        // changes a tunable of the allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// `keyhold init`: the first administrator's API key goes to stdout once, never to the log.
fn init(args: InitArgs) -> ExitCode {
    match keyhold_server::bootstrap::init(&args.data_dir, args.store.as_deref()) {
        Ok(done) => {
            let out = zeroize::Zeroizing::new(
                serde_json::json!({"account_id": done.account_id, "iam_id": done.iam_id,
                    "apikey_id": done.apikey_id, "apikey": done.apikey.as_str()})
                .to_string(),
            );
            println!("{}", out.as_str());
            eprintln!("keyhold: initialised account {}; the API key above is shown only once: keep it safe", done.account_id);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyhold: {e}");
            ExitCode::from(match e {
                keyhold_server::bootstrap::InitError::Refused(_) => 4,
                keyhold_server::bootstrap::InitError::Failed(_) => 1,
            })
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    // Usage errors exit 1 (clap's default, 2, means "not found" for the client commands).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let cli = match cli.command {
        // The client commands print for people (and scripts): no JSON log lines.
        Command::Client(cmd) => return cli::run(cmd),
        other => Cli { command: other },
    };
    // Log lines are written by a background thread in batches (log_writer.rs); none
    // is dropped: a full buffer slows the request down instead.
    let (log_writer, _log_guard) = match log_writer::batched_stderr() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("keyhold: cannot start the log writer: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .json()
        .with_writer(log_writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYHOLD_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,postgres=warn,tokio_postgres=warn")
            }),
        )
        .init();
    match cli.command {
        Command::Bench(args) => keyhold_bench::main(args),
        Command::Init(args) => init(args),
        Command::Ceremony(args) => ceremony_cli::main(args),
        Command::Client(cmd) => cli::run(cmd),
        Command::Serve(args) => {
            let dev = args.dev;
            let cfg = match config(args) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("keyhold: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("keyhold: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(keyhold_server::server::serve(cfg, dev)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keyhold: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
