//! The client side of the `keyhold` command: key management against a Keyhold (or Key
//! Protect) service, and envelope encryption of files.

mod admin;
mod audit;
mod crypt;
mod error;
mod iam;
mod instances;
mod keys;
mod output;
mod pipe;
mod profile;
mod profiles;

use std::process::ExitCode;

use clap::{Args, Subcommand};
use keyhold_client::Client;

pub use error::EXIT_CODES_HELP;
use error::{CliError, CliResult};
use profile::ConnArgs;

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: keys::KeysCmd,
}

#[derive(Args, Debug)]
pub struct PoliciesArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: admin::PoliciesCmd,
}

#[derive(Args, Debug)]
pub struct AliasesArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: admin::AliasesCmd,
}

#[derive(Args, Debug)]
pub struct RingsArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: admin::RingsCmd,
}

#[derive(Args, Debug)]
pub struct ImportTokenArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: admin::ImportTokenCmd,
}

#[derive(Args, Debug)]
pub struct InstancesArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: instances::InstancesCmd,
}

#[derive(Args, Debug)]
pub struct AuthorizationsArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: instances::AuthorizationsCmd,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: audit::AuditCmd,
}

#[derive(Args, Debug)]
pub struct ProfilesArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: profiles::ProfilesCmd,
}

#[derive(Args, Debug)]
pub struct LoginCmd {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    args: iam::LoginArgs,
}

#[derive(Args, Debug)]
pub struct IamArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: iam::IamCmd,
}

#[derive(Args, Debug)]
pub struct EncryptCmd {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    args: crypt::EncryptArgs,
}

#[derive(Args, Debug)]
pub struct DecryptCmd {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    args: crypt::DecryptArgs,
}

/// The client commands, as `keyhold`'s top-level subcommands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Manage keys: create, import, list, show, wrap, unwrap, rewrap, rotate, disable,
    /// enable, delete, restore, purge, versions.
    #[command(
        after_help = "Examples:\n  keyhold keys create my-root-key --dev-json keyhold-data/dev.json\n  \
keyhold keys list -o json\n  keyhold keys --help   # every subcommand"
    )]
    Keys(KeysArgs),
    /// Key and instance policies.
    #[command(
        after_help = "Examples:\n  keyhold policies show my-root-key\n  keyhold policies set-rotation my-root-key --months 6"
    )]
    Policies(PoliciesArgs),
    /// Key aliases.
    #[command(
        after_help = "Examples:\n  keyhold aliases create 6f3c…-uuid backups-key\n  keyhold aliases delete 6f3c…-uuid backups-key"
    )]
    Aliases(AliasesArgs),
    /// Key rings.
    #[command(after_help = "Examples:\n  keyhold rings create team-a\n  keyhold rings list")]
    Rings(RingsArgs),
    /// The instance's import token, for secure import (`keyhold keys import --secure`).
    #[command(
        name = "import-token",
        after_help = "Examples:\n  keyhold import-token create\n  keyhold import-token show"
    )]
    ImportToken(ImportTokenArgs),
    /// Service instances (the resource controller): crypto instances (hs-crypto),
    /// key-management instances (kms), other services' instances, connection info.
    #[command(
        after_help = "Examples:\n  keyhold instances create my-crypto --service hs-crypto --units 2\n  \
keyhold instances connection-info 0f6e…-uuid\n  keyhold instances --help   # every subcommand"
    )]
    Instances(InstancesArgs),
    /// Service-to-service authorizations (e.g. kms → hs-crypto Reader).
    #[command(
        after_help = "Examples:\n  keyhold authorizations create --source-service kms --source-id 7a1b…-uuid \\\n      \
--target-service hs-crypto --target-id 0f6e…-uuid --role Reader\n  keyhold authorizations list"
    )]
    Authorizations(AuthorizationsArgs),
    /// The tamper-evident audit trail: verify an export, export it, list events.
    #[command(
        after_help = "Examples:\n  keyhold audit events --outcome failure\n  keyhold audit export trail.jsonl\n  \
keyhold audit keys -o json > audit-keys.json\n  keyhold audit verify trail.jsonl --public-key audit-keys.json"
    )]
    Audit(AuditArgs),
    /// Connection profiles in the config file (~/.config/keyhold/config.toml).
    #[command(
        after_help = "Examples:\n  keyhold profiles add dev --dev-json keyhold-data/dev.json --default\n  keyhold profiles list"
    )]
    Profiles(ProfilesArgs),
    /// Check an API key, print who it belongs to, and save the connection as a profile.
    #[command(
        after_help = "The API key comes from KEYHOLD_APIKEY or --apikey-file (never the command line); it is saved\n\
in the profile (the config file is written mode 0600).\n\nExamples:\n  \
KEYHOLD_APIKEY=$(jq -r .apikey admin.json) keyhold login --url https://kms.example:8443\n  \
keyhold login --dev-json keyhold-data/dev.json --save-as dev\n  \
keyhold login --url http://127.0.0.1:8080 --instance 1234… --apikey-file ci.key --save-as ci"
    )]
    Login(LoginCmd),
    /// IAM: users, service IDs, access groups, API keys and access policies of the account.
    #[command(
        after_help = "Examples:\n  keyhold iam whoami\n  keyhold iam service-ids create backup-job\n  \
keyhold iam api-keys create backup-key --iam-id iam-ServiceId-… --out backup.key\n  \
keyhold iam policies create --subject iam-ServiceId-… --role Writer --on-instance 1234…\n  \
keyhold iam users --help   # every subcommand"
    )]
    Iam(IamArgs),
    /// Encrypt a file under a fresh data key wrapped by a root key (AES-256-GCM, STREAM, 64 KiB segments).
    #[command(
        after_help = "Examples:\n  keyhold encrypt --key my-root-key backup.tar backup.tar.khe\n  \
tar c dir | keyhold encrypt --key my-root-key - - > dir.tar.khe"
    )]
    Encrypt(EncryptCmd),
    /// Decrypt a file made by `keyhold encrypt` (the root key is named in the file).
    #[command(
        after_help = "Examples:\n  keyhold decrypt backup.tar.khe backup.tar\n  keyhold decrypt dir.tar.khe - | tar x"
    )]
    Decrypt(DecryptCmd),
}

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Local(format!("cannot start the runtime: {e}")))
}

fn client(conn: &ConnArgs) -> CliResult<Client> {
    Ok(Client::new(profile::resolve(conn)?)?)
}

fn dispatch(cmd: ClientCommand) -> CliResult<()> {
    let rt = runtime()?;
    match cmd {
        ClientCommand::Keys(a) => {
            let c = client(&a.conn)?;
            rt.block_on(keys::run(&c, a.conn.output, a.cmd))
        }
        ClientCommand::Policies(a) => {
            let c = client(&a.conn)?;
            rt.block_on(admin::policies(&c, a.conn.output, a.cmd))
        }
        ClientCommand::Aliases(a) => {
            let c = client(&a.conn)?;
            rt.block_on(admin::aliases(&c, a.conn.output, a.cmd))
        }
        ClientCommand::Rings(a) => {
            let c = client(&a.conn)?;
            rt.block_on(admin::rings(&c, a.conn.output, a.cmd))
        }
        ClientCommand::ImportToken(a) => {
            let c = client(&a.conn)?;
            rt.block_on(admin::import_token(&c, a.conn.output, a.cmd))
        }
        ClientCommand::Instances(a) => {
            let c = Client::new(profile::resolve_account(&a.conn)?)?;
            rt.block_on(instances::instances(&c, a.conn.output, a.cmd))
        }
        ClientCommand::Authorizations(a) => {
            let c = Client::new(profile::resolve_account(&a.conn)?)?;
            rt.block_on(instances::authorizations(&c, a.conn.output, a.cmd))
        }
        ClientCommand::Audit(a) => rt.block_on(audit::run(&a.conn, a.conn.output, a.cmd)),
        ClientCommand::Profiles(a) => profiles::run(&a.conn, a.conn.output, a.cmd),
        ClientCommand::Login(a) => {
            let c = Client::new(profile::resolve_account(&a.conn)?)?;
            rt.block_on(iam::login(&c, &a.conn, a.conn.output, a.args))
        }
        ClientCommand::Iam(a) => {
            let c = Client::new(profile::resolve_account(&a.conn)?)?;
            rt.block_on(iam::run(&c, a.conn.output, a.cmd))
        }
        ClientCommand::Encrypt(a) => {
            let c = client(&a.conn)?;
            crypt::encrypt(&rt, &c, a.conn.output, a.args)
        }
        ClientCommand::Decrypt(a) => {
            let c = client(&a.conn)?;
            crypt::decrypt(&rt, &c, a.conn.output, a.args)
        }
    }
}

/// Runs a client command; errors go to stderr as one `keyhold: error: …` line (plus a
/// hint) and become the documented exit code.
pub fn run(cmd: ClientCommand) -> ExitCode {
    match dispatch(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = e.with_default_hint();
            eprintln!("keyhold: error: {e}");
            e.exit_code()
        }
    }
}
