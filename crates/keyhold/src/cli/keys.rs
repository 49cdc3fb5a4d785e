//! `keyhold keys …`: the key lifecycle and the key actions.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, Subcommand};
use keyhold_client::model::{KeyListQuery, NewKey};
use keyhold_client::Client;
use serde_json::json;
use zeroize::Zeroizing;

use super::error::{CliError, CliResult};
use super::output;
use super::profile::Output;

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create a root key (default) or a standard key; the service generates the material.
    #[command(after_help = "Examples:\n  keyhold keys create my-root-key\n  \
keyhold keys create app-secret --standard --show-payload\n  \
keyhold keys create backups --alias backups-key --tag team-a --description 'backup DEKs'\n  \
keyhold keys create audited --rotation-months 3 --dual-auth-delete true")]
    Create(CreateArgs),
    /// Import your own key material (plainly, or with --secure through the import token).
    #[command(after_help = "Examples:\n  head -c 32 /dev/urandom > material.bin\n  \
keyhold keys import my-imported-key --material-file material.bin\n  \
keyhold import-token create && keyhold keys import secure-key --material-file material.bin --secure")]
    Import(ImportArgs),
    /// List keys (never with payloads).
    #[command(
        after_help = "Examples:\n  keyhold keys list\n  keyhold keys list --state 1,2 --type root\n  \
keyhold keys list --search backups -o json"
    )]
    List(ListArgs),
    /// Show one key's metadata (a standard key's payload only with --show-payload).
    #[command(
        after_help = "Examples:\n  keyhold keys show my-alias\n  keyhold keys show 6f3c…-uuid --show-payload -o json"
    )]
    Show(ShowArgs),
    /// Wrap a data key under a root key (or have one generated).
    #[command(
        after_help = "Examples:\n  keyhold keys wrap my-root-key --plaintext-file dek.bin --aad bucket-42\n  \
keyhold keys wrap my-root-key --show-plaintext      # the service generates a DEK"
    )]
    Wrap(WrapArgs),
    /// Unwrap a ciphertext made by wrap (prints the data key, base64, or writes it to --out).
    #[command(
        after_help = "Examples:\n  keyhold keys unwrap my-root-key --ciphertext \"$CT\" --aad bucket-42\n  \
keyhold keys unwrap my-root-key --ciphertext \"$CT\" --out dek.bin"
    )]
    Unwrap(UnwrapArgs),
    /// Re-encrypt a ciphertext under the key's newest version.
    #[command(after_help = "Example:\n  keyhold keys rewrap my-root-key --ciphertext \"$CT\"")]
    Rewrap(CiphertextArgs),
    /// Rotate a root key (imported keys need new material).
    #[command(
        after_help = "Examples:\n  keyhold keys rotate my-root-key\n  keyhold keys rotate my-imported-key --material-file new.bin"
    )]
    Rotate(RotateArgs),
    /// Disable (suspend) a key: wrap and unwrap stop working until it is enabled.
    #[command(after_help = "Example:\n  keyhold keys disable my-root-key")]
    Disable(IdArg),
    /// Enable a disabled key.
    #[command(after_help = "Example:\n  keyhold keys enable my-root-key")]
    Enable(IdArg),
    /// Delete a key (restorable for 30 days).
    #[command(
        after_help = "Examples:\n  keyhold keys delete my-root-key\n  keyhold keys delete my-root-key --force   # also drops its registrations"
    )]
    Delete(DeleteArgs),
    /// Restore a deleted key.
    #[command(after_help = "Example:\n  keyhold keys restore 6f3c…-uuid")]
    Restore(IdArg),
    /// Purge a deleted key for good (KeyPurge role; 4 hours after deletion).
    #[command(after_help = "Example:\n  keyhold keys purge 6f3c…-uuid")]
    Purge(IdArg),
    /// List a key's versions, newest first.
    #[command(after_help = "Example:\n  keyhold keys versions my-root-key")]
    Versions(IdArg),
    /// Dual authorization: approve the deletion of a key (a second person then deletes it).
    #[command(
        after_help = "Example:\n  keyhold keys approve-deletion my-root-key   # as the first approver"
    )]
    ApproveDeletion(IdArg),
    /// Dual authorization: withdraw an approval of deletion.
    #[command(after_help = "Example:\n  keyhold keys cancel-deletion my-root-key")]
    CancelDeletion(IdArg),
    /// List the resources registered as using a key.
    #[command(after_help = "Example:\n  keyhold keys registrations my-root-key -o json")]
    Registrations(IdArg),
    /// Ask the service to notify the key's registered resources again.
    #[command(after_help = "Example:\n  keyhold keys sync my-root-key")]
    Sync(IdArg),
    /// Move a key to another key ring.
    #[command(after_help = "Example:\n  keyhold keys move my-root-key --ring team-a")]
    Move(MoveArgs),
}

#[derive(Args, Debug)]
pub struct IdArg {
    /// Key id (UUID) or alias.
    pub key: String,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Key name (2–90 characters).
    pub name: String,
    /// Create a standard key (its payload can be retrieved) instead of a root key.
    #[arg(long)]
    pub standard: bool,
    #[arg(long)]
    pub description: Option<String>,
    /// Alias for the key (repeatable, at most 5).
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Expiration date, RFC 3339 (e.g. 2030-01-01T00:00:00Z).
    #[arg(long)]
    pub expiration: Option<String>,
    /// Rotation policy for this key, every N months (1–12), overriding the instance's.
    #[arg(long, value_name = "N")]
    pub rotation_months: Option<u32>,
    /// Dual-authorization delete for this key, overriding the instance's policy.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub dual_auth_delete: Option<bool>,
    /// Print a standard key's payload (a secret).
    #[arg(long)]
    pub show_payload: bool,
}

impl CreateArgs {
    fn overrides(&self) -> bool {
        self.rotation_months.is_some() || self.dual_auth_delete.is_some()
    }
}

/// Creates through the policy-overrides endpoint when policies were given.
async fn create(c: &Client, a: &CreateArgs, nk: &NewKey) -> CliResult<keyhold_client::model::Key> {
    Ok(if a.overrides() {
        c.create_key_with_overrides(nk, a.rotation_months, a.dual_auth_delete)
            .await?
    } else {
        c.create_key(nk).await?
    })
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// File with the raw key material (`-` for stdin). Root keys: 16, 24 or 32 bytes.
    #[arg(long, value_name = "PATH")]
    pub material_file: PathBuf,
    /// Secure import: encrypt the material for the instance's import token (root keys).
    #[arg(long, conflicts_with = "standard")]
    pub secure: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// States to list, comma-separated: 0 pre-active, 1 active, 2 suspended, 3 deactivated, 5 destroyed.
    #[arg(long, value_delimiter = ',')]
    pub state: Vec<u8>,
    /// Only root or only standard keys.
    #[arg(long = "type", value_parser = ["root", "standard"])]
    pub kind: Option<String>,
    #[arg(long)]
    pub limit: Option<u32>,
    #[arg(long)]
    pub offset: Option<u32>,
    /// Search names and aliases (Key Protect search syntax).
    #[arg(long)]
    pub search: Option<String>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    pub key: String,
    /// Print a standard key's payload (a secret).
    #[arg(long)]
    pub show_payload: bool,
}

#[derive(Args, Debug)]
pub struct WrapArgs {
    pub key: String,
    /// File with the data key to wrap (`-` for stdin); without it the service generates one.
    #[arg(long, value_name = "PATH")]
    pub plaintext_file: Option<PathBuf>,
    /// Additional authenticated data (repeatable); must be given again to unwrap.
    #[arg(long)]
    pub aad: Vec<String>,
    /// Print the generated data key (a secret) when no --plaintext-file was given.
    #[arg(long)]
    pub show_plaintext: bool,
}

#[derive(Args, Debug)]
pub struct CiphertextArgs {
    pub key: String,
    /// The ciphertext from wrap.
    #[arg(long)]
    pub ciphertext: String,
    #[arg(long)]
    pub aad: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UnwrapArgs {
    #[command(flatten)]
    pub ct: CiphertextArgs,
    /// Write the raw data key to this file (mode 0600) instead of printing it.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    pub key: String,
    /// New key material for an imported key (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    pub material_file: Option<PathBuf>,
    /// Send the new material through the import token.
    #[arg(long, requires = "material_file")]
    pub secure: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    pub key: String,
    /// Delete even if resources are registered with the key.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct MoveArgs {
    pub key: String,
    #[arg(long)]
    pub ring: String,
}

/// Reads a secret file (or stdin for `-`) into zeroized memory.
pub fn read_secret(path: &Path) -> CliResult<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut buf)?;
    } else {
        let mut f = std::fs::File::open(path)
            .map_err(|e| CliError::Local(format!("{}: {e}", path.display())))?;
        f.read_to_end(&mut buf)?;
    }
    Ok(buf)
}

fn new_key(a: &CreateArgs) -> NewKey {
    NewKey {
        name: a.name.clone(),
        description: a.description.clone(),
        extractable: a.standard,
        aliases: a.aliases.clone(),
        tags: a.tags.clone(),
        expiration_date: a.expiration.clone(),
        ..NewKey::default()
    }
}

pub async fn run(c: &Client, out: Output, cmd: KeysCmd) -> CliResult<()> {
    match cmd {
        KeysCmd::Create(a) => {
            let k = create(c, &a, &new_key(&a)).await?;
            output::key(out, &output::redact(k, a.show_payload))
        }
        KeysCmd::Import(a) => {
            let material = read_secret(&a.material_file)?;
            let mut nk = new_key(&a.create);
            let k = if a.secure {
                c.import_key_secure(&nk, &material).await?
            } else {
                nk.payload = Some(Zeroizing::new(STANDARD.encode(&material[..])));
                create(c, &a.create, &nk).await?
            };
            output::key(out, &output::redact(k, a.create.show_payload))
        }
        KeysCmd::List(a) => {
            let q = KeyListQuery {
                limit: a.limit,
                offset: a.offset,
                states: a.state,
                extractable: a.kind.as_deref().map(|k| k == "standard"),
                search: a.search,
            };
            let ks = c.list_keys(&q).await?;
            output::keys(out, &ks)
        }
        KeysCmd::Show(a) => {
            let k = if a.show_payload {
                c.get_key(&a.key).await?
            } else {
                c.get_key_metadata(&a.key).await?
            };
            output::key(out, &output::redact(k, a.show_payload))
        }
        KeysCmd::Wrap(a) => {
            let pt = match &a.plaintext_file {
                Some(p) => Some(read_secret(p)?),
                None => None,
            };
            let mut w = c
                .wrap(&a.key, pt.as_deref().map(|v| &v[..]), &a.aad)
                .await?;
            if !a.show_plaintext {
                w.plaintext = None;
            }
            match out {
                Output::Json => output::json(&w),
                Output::Table => {
                    let mut pairs = vec![
                        ("ciphertext", w.ciphertext.clone()),
                        (
                            "key version",
                            w.key_version.map(|v| v.id).unwrap_or_default(),
                        ),
                    ];
                    if let Some(p) = w.plaintext {
                        pairs.push(("plaintext", p));
                    }
                    output::fields(&pairs);
                    Ok(())
                }
            }
        }
        KeysCmd::Unwrap(a) => {
            let u = c.unwrap(&a.ct.key, &a.ct.ciphertext, &a.ct.aad).await?;
            let plaintext = Zeroizing::new(u.plaintext.clone());
            if let Some(path) = &a.out {
                let raw = Zeroizing::new(
                    STANDARD
                        .decode(plaintext.as_bytes())
                        .map_err(|e| CliError::Local(format!("unwrap answer: {e}")))?,
                );
                write_private(path, &raw)?;
                let mut u = u;
                u.plaintext = format!("(written to {})", path.display());
                return match out {
                    Output::Json => output::json(&u),
                    Output::Table => {
                        println!("data key written to {}", path.display());
                        Ok(())
                    }
                };
            }
            match out {
                Output::Json => output::json(&u),
                Output::Table => {
                    let mut pairs = vec![
                        ("plaintext", u.plaintext.clone()),
                        (
                            "key version",
                            u.key_version.map(|v| v.id).unwrap_or_default(),
                        ),
                    ];
                    if let Some(ct) = u.ciphertext {
                        pairs.push(("rewrapped ciphertext", ct));
                        pairs.push((
                            "rewrapped version",
                            u.rewrapped_key_version.map(|v| v.id).unwrap_or_default(),
                        ));
                    }
                    output::fields(&pairs);
                    Ok(())
                }
            }
        }
        KeysCmd::Rewrap(a) => {
            let r = c.rewrap(&a.key, &a.ciphertext, &a.aad).await?;
            match out {
                Output::Json => output::json(&r),
                Output::Table => {
                    output::fields(&[
                        ("ciphertext", r.ciphertext.clone()),
                        (
                            "from version",
                            r.key_version.map(|v| v.id).unwrap_or_default(),
                        ),
                        (
                            "to version",
                            r.rewrapped_key_version.map(|v| v.id).unwrap_or_default(),
                        ),
                    ]);
                    Ok(())
                }
            }
        }
        KeysCmd::Rotate(a) => {
            match (&a.material_file, a.secure) {
                (Some(p), true) => {
                    let m = read_secret(p)?;
                    let token = c.get_import_token().await?;
                    let fields = keyhold_client::import::seal_for_token(&token, &m)?;
                    c.rotate_secure(&a.key, &fields).await?;
                }
                (Some(p), false) => {
                    let m = read_secret(p)?;
                    let b64 = Zeroizing::new(STANDARD.encode(&m[..]));
                    c.rotate(&a.key, Some(&b64)).await?;
                }
                (None, _) => c.rotate(&a.key, None).await?,
            }
            let k = c.get_key_metadata(&a.key).await?;
            let version = k.key_version.map(|v| v.id).unwrap_or_default();
            output::done(
                out,
                &format!("rotated {}; new version {version}", a.key),
                json!({"id": k.id, "keyVersion": version}),
            )
        }
        KeysCmd::Disable(a) => {
            c.disable_key(&a.key).await?;
            output::done(
                out,
                &format!("disabled {}", a.key),
                json!({"key": a.key, "state": 2}),
            )
        }
        KeysCmd::Enable(a) => {
            c.enable_key(&a.key).await?;
            output::done(
                out,
                &format!("enabled {}", a.key),
                json!({"key": a.key, "state": 1}),
            )
        }
        KeysCmd::Delete(a) => {
            let k = c.delete_key(&a.key, a.force).await?;
            match out {
                Output::Json => output::json(&output::redact(k, false)),
                Output::Table => {
                    println!(
                        "deleted {} (restorable until {})",
                        k.id,
                        k.extra
                            .get("restoreExpirationDate")
                            .and_then(|v| v.as_str())
                            .unwrap_or("?")
                    );
                    Ok(())
                }
            }
        }
        KeysCmd::Restore(a) => {
            let k = c.restore_key(&a.key).await?;
            output::key(out, &output::redact(k, false))
        }
        KeysCmd::Purge(a) => {
            let k = c.purge_key(&a.key).await?;
            output::done(out, &format!("purged {}", k.id), json!({"id": k.id}))
        }
        KeysCmd::Versions(a) => {
            let vs = c.key_versions(&a.key).await?;
            match out {
                Output::Json => output::json(&vs),
                Output::Table => {
                    let rows: Vec<Vec<String>> = vs
                        .iter()
                        .map(|v| vec![v.id.clone(), v.creation_date.clone().unwrap_or_default()])
                        .collect();
                    output::table(&["VERSION", "CREATED"], &rows);
                    Ok(())
                }
            }
        }
        KeysCmd::ApproveDeletion(a) => {
            c.set_key_for_deletion(&a.key, true).await?;
            output::done(
                out,
                &format!(
                    "deletion of {} approved; another user may now delete it",
                    a.key
                ),
                json!({"key": a.key}),
            )
        }
        KeysCmd::CancelDeletion(a) => {
            c.set_key_for_deletion(&a.key, false).await?;
            output::done(
                out,
                &format!("deletion approval of {} withdrawn", a.key),
                json!({"key": a.key}),
            )
        }
        KeysCmd::Registrations(a) => output::values(out, &c.key_registrations(&a.key).await?),
        KeysCmd::Sync(a) => {
            c.sync_key(&a.key).await?;
            output::done(
                out,
                &format!("sync of {} requested", a.key),
                json!({"key": a.key}),
            )
        }
        KeysCmd::Move(a) => {
            let k = c.move_key(&a.key, &a.ring).await?;
            output::key(out, &output::redact(k, false))
        }
    }
}

/// Writes a file only its owner may read.
pub fn write_private(path: &Path, bytes: &[u8]) -> CliResult<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| CliError::Local(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)?;
    Ok(())
}
