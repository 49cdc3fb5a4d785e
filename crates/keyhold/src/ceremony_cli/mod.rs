//! `keyhold ceremony …`: the master-key ceremony from administrators' terminals.
//! Each person runs the commands with only their own files (their signature
//! key and their key part); secrets are opened locally and a key part leaves
//! the terminal only sealed to the server's transport key.

mod client;
mod secrets;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, Subcommand};
use keyhold_ceremony::admin::{AdminKeyFile, AdminSigner, SigAlg};
use keyhold_ceremony::command::{Command, Verb};
use keyhold_ceremony::part::KeyPartFile;
use keyhold_ceremony::{transport, CeremonyError, KdfParams};
use serde_json::{json, Value};

use client::Client;
use secrets::Source;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
    #[error("refused by the server: {0}")]
    Refused(String),
    #[error("{0}")]
    Ceremony(#[from] CeremonyError),
}

const EXAMPLES: &str = "\
Examples (three administrators, signature threshold 2, a master key in two parts):
  # each administrator, at their own terminal:
  keyhold ceremony admin-keygen --name alice --out alice.key      # also writes alice.pub
  keyhold ceremony part-generate --holder alice --out alice.part  # part holders only
  keyhold ceremony add-admin --admin-key alice.key                 # imprint mode: enroll yourself
  # one administrator, while still in imprint mode:
  keyhold ceremony set-thresholds --signature 2 --revocation 2 --admin-key alice.key
  keyhold ceremony exit-imprint --admin-key alice.key
  # the part holders:
  keyhold ceremony load-part --parts 2 --part alice.part --admin-key alice.key
  keyhold ceremony load-part --parts 2 --part bob.part --admin-key bob.key
  # two administrators each sign (the command runs at the second signature):
  keyhold ceremony commit --admin-key alice.key      then     --admin-key carol.key
  keyhold ceremony activate --admin-key alice.key    then     --admin-key carol.key
  # after every restart, the part holders:
  keyhold ceremony unseal --part alice.part --admin-key alice.key
  keyhold ceremony unseal --part bob.part --admin-key bob.key
  keyhold ceremony status
  # rotation, while unsealed: the new parts' holders load them, then two administrators sign
  keyhold ceremony load-part --parts 2 --part alice2.part --admin-key alice.key   (and bob2.part)
  keyhold ceremony commit --admin-key alice.key      then     --admin-key carol.key
  keyhold ceremony rotate --admin-key alice.key      then     --admin-key carol.key
  keyhold ceremony status       # rotation: blobs done / total; the old key is retired at the end
  # a restart mid-rotation: unseal with the parts of both keys (each holder, each part)
  keyhold ceremony unseal --part alice.part --admin-key alice.key   (alice2.part, bob.part, bob2.part)
  # crypto-shredding: destroy the master key; every key then answers MASTER_KEY_ZEROIZED_ERR
  keyhold ceremony zeroize --verification-pattern VP --admin-key alice.key   then   --admin-key carol.key

Passphrases are asked at the terminal, or read from --passphrase-file /
--part-passphrase-file, or from $KEYHOLD_ADMIN_PASSPHRASE / $KEYHOLD_PART_PASSPHRASE.";

#[derive(Args)]
#[command(after_help = EXAMPLES)]
pub struct CeremonyArgs {
    /// The server's dev.json (URL and API key). Default: keyhold-data/dev.json.
    #[arg(long, env = "KEYHOLD_DEV_JSON", global = true)]
    dev_json: Option<PathBuf>,
    /// The server URL (instead of --dev-json).
    #[arg(long, env = "KEYHOLD_URL", global = true, requires = "apikey")]
    url: Option<String>,
    /// An API key of a user of the instance's account (instead of --dev-json).
    #[arg(long, env = "KEYHOLD_APIKEY", global = true, hide_env_values = true)]
    apikey: Option<String>,
    #[command(subcommand)]
    command: CeremonyCommand,
}

#[derive(Args)]
struct SignerArgs {
    /// Your administrator key file (it signs the command).
    #[arg(long, value_name = "FILE")]
    admin_key: PathBuf,
    /// A file holding the key file's passphrase (else $KEYHOLD_ADMIN_PASSPHRASE or a prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(Args)]
struct PartArgs {
    /// Your key-part file.
    #[arg(long, value_name = "FILE")]
    part: PathBuf,
    /// A file holding the part file's passphrase (else $KEYHOLD_PART_PASSPHRASE or a prompt).
    #[arg(long, value_name = "FILE")]
    part_passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum CeremonyCommand {
    /// Generate an administrator signature key: FILE (private, passphrase-protected) and FILE.pub.
    AdminKeygen {
        #[arg(long)]
        name: String,
        /// ed25519, p256 or p521.
        #[arg(long, default_value = "ed25519")]
        algorithm: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Generate a random master-key part in a passphrase-protected file.
    PartGenerate {
        /// The administrator who will hold and load the part.
        #[arg(long)]
        holder: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long, value_name = "FILE")]
        part_passphrase_file: Option<PathBuf>,
    },
    /// Show the ceremony: sealed or not, admins, thresholds, registers, pending commands.
    Status {
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add an administrator. In imprint mode, enroll yourself (your key signs);
    /// afterwards give --new-admin and collect the signature threshold.
    AddAdmin {
        /// The new administrator's public file (NAME.pub or their key file).
        #[arg(long, value_name = "FILE")]
        new_admin: Option<PathBuf>,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Remove an administrator (needs the revocation threshold).
    RemoveAdmin {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Set the signature and revocation thresholds (1-8).
    SetThresholds {
        #[arg(long)]
        signature: u8,
        #[arg(long)]
        revocation: u8,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Leave imprint mode: from then on every command needs the thresholds' signatures.
    ExitImprint {
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Load your key part into the new master key register.
    LoadPart {
        /// How many parts the master key has (2 or 3).
        #[arg(long)]
        parts: u8,
        #[command(flatten)]
        part: PartArgs,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Commit the full new master key register (signed over its verification pattern).
    Commit {
        /// The pattern you verified (default: the register's, as status shows it).
        #[arg(long)]
        verification_pattern: Option<String>,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Make the committed master key current: the crypto unit unseals with it.
    Activate {
        #[arg(long)]
        verification_pattern: Option<String>,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Rotate the master key: make the committed new key current while the old one is
    /// active. New keys are wrapped under it at once; every stored key is re-wrapped in
    /// the background (progress in status); then the old key is retired.
    Rotate {
        #[arg(long)]
        verification_pattern: Option<String>,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Destroy the master key (crypto-shredding): every node seals for good and every key
    /// of the instance answers MASTER_KEY_ZEROIZED_ERR. Cannot be undone.
    Zeroize {
        /// The CURRENT master key's verification pattern (as status shows it): you sign
        /// the key you destroy.
        #[arg(long)]
        verification_pattern: String,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// After a restart: load your key part again. The unit unseals when every part is in
    /// and the signature threshold of administrators took part; an administrator without
    /// a part approves by running it without --part (needed only when the part holders
    /// are fewer than the signature threshold).
    Unseal {
        /// Your key-part file (omit to approve without a part).
        #[arg(long, value_name = "FILE")]
        part: Option<PathBuf>,
        /// A file holding the part file's passphrase (else $KEYHOLD_PART_PASSPHRASE or a prompt).
        #[arg(long, value_name = "FILE")]
        part_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        signer: SignerArgs,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    fs::read(path).map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))
}

/// Writes a new owner-only file; never overwrites one.
fn write_new(path: &Path, text: &str) -> Result<(), CliError> {
    let mut f = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))
}

fn open_signer(s: &SignerArgs) -> Result<AdminSigner, CliError> {
    let file = AdminKeyFile::from_json(&read(&s.admin_key)?)?;
    let pass = secrets::existing(&Source {
        what: format!("administrator key {}", s.admin_key.display()),
        file: s.passphrase_file.as_deref(),
        env: "KEYHOLD_ADMIN_PASSPHRASE",
    })?;
    file.unlock(pass.as_bytes()).map_err(|e| match e {
        CeremonyError::WrongPassphrase => CliError::Usage(format!(
            "cannot open {}: wrong passphrase, or the file was altered",
            s.admin_key.display()
        )),
        e => e.into(),
    })
}

fn open_part(p: &PartArgs) -> Result<keyhold_ceremony::Secret32, CliError> {
    let file = KeyPartFile::from_json(&read(&p.part)?)?;
    let pass = secrets::existing(&Source {
        what: format!("key part {}", p.part.display()),
        file: p.part_passphrase_file.as_deref(),
        env: "KEYHOLD_PART_PASSPHRASE",
    })?;
    file.open(pass.as_bytes()).map_err(|e| match e {
        CeremonyError::WrongPassphrase => CliError::Usage(format!(
            "cannot open {}: wrong passphrase, or the file was altered",
            p.part.display()
        )),
        e => e.into(),
    })
}

fn connect(a: &CeremonyArgs) -> Result<Client, CliError> {
    if let (Some(url), Some(key)) = (&a.url, &a.apikey) {
        return Client::new(url, key);
    }
    let path = a
        .dev_json
        .clone()
        .unwrap_or_else(|| PathBuf::from("keyhold-data/dev.json"));
    let v: Value = serde_json::from_slice(&read(&path)?)
        .map_err(|_| CliError::Usage(format!("{} is not a dev.json", path.display())))?;
    match (v["url"].as_str(), v["apikey"].as_str()) {
        (Some(u), Some(k)) => Client::new(u, k),
        _ => Err(CliError::Usage(format!(
            "{} lacks url or apikey",
            path.display()
        ))),
    }
}

/// A command for the ceremony's current sequence number.
fn prepare(c: &mut Client, verb: Verb) -> Result<(Command, Value), CliError> {
    let st = c.status()?;
    if st["master_key_source"] != "ceremony" {
        return Err(CliError::Refused(
            "this server's master key comes from a file (--master-key file); the ceremony needs --master-key ceremony".into(),
        ));
    }
    let ci = st["crypto_instance"].as_str().unwrap_or_default();
    let seq = st["sequence"].as_u64().unwrap_or_default();
    Ok((Command::new(ci, seq, verb), st))
}

fn submit(c: &mut Client, cmd: &Command, signer: &AdminSigner) -> Result<Value, CliError> {
    let sig = signer.sign(&cmd.canonical())?;
    c.submit(&json!({"command": cmd, "admin": signer.name, "signature": STANDARD.encode(sig)}))
}

fn report(out: &Value) {
    match out["result"].as_str() {
        Some("pending") => println!(
            "PENDING: {} signed by {} ({} of {} required signatures). Not executed yet: another administrator must run the same command with their key.",
            out["verb"].as_str().unwrap_or("command"),
            join(&out["signed_by"]),
            out["signatures"],
            out["required"]
        ),
        Some("executed") => println!(
            "EXECUTED: {} (signed by {})",
            out["verb"].as_str().unwrap_or("command"),
            join(&out["signed_by"])
        ),
        Some("part_loaded") => {
            println!(
                "key part loaded into the {} register: {} of {} parts",
                out["register"].as_str().unwrap_or("?"),
                out["parts_loaded"],
                out["parts_total"]
            );
            if out["register"] == "unseal" && out["parts_loaded"] == out["parts_total"] {
                println!(
                    "still sealed: every part is in, but fewer administrators than the signature threshold took part (approved also by: {}); another administrator runs `keyhold ceremony unseal --admin-key KEY` without --part",
                    join(&out["approved_by"])
                );
            }
        }
        Some("unsealed") => {
            println!(
                "UNSEALED: the crypto unit holds the master key with verification pattern {}",
                out["verification_pattern"].as_str().unwrap_or("?")
            );
            if let Some(to) = out["rotating_to"].as_str() {
                println!("rotation in progress to the master key with verification pattern {to}: re-wrapping resumes");
            }
        }
        _ => println!("{out}"),
    }
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn print_status(st: &Value) {
    println!(
        "crypto instance:     {}",
        st["crypto_instance"].as_str().unwrap_or("-")
    );
    println!(
        "master key source:   {}",
        st["master_key_source"].as_str().unwrap_or("-")
    );
    println!("sealed:              {}", st["sealed"]);
    if st["master_key_source"] != "ceremony" {
        return;
    }
    println!("imprint mode:        {}", st["imprint_mode"]);
    println!(
        "thresholds:          signature {}, revocation {}",
        st["signature_threshold"], st["revocation_threshold"]
    );
    println!("sequence:            {}", st["sequence"]);
    println!("administrators:");
    for a in st["admins"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {:<8} {}",
            a["name"].as_str().unwrap_or("?"),
            a["algorithm"].as_str().unwrap_or("?"),
            a["fingerprint"].as_str().unwrap_or("?")
        );
    }
    let r = &st["registers"];
    println!(
        "new register:        {} ({} of {} parts; loaded by {}) pattern {}",
        r["new"]["state"].as_str().unwrap_or("?"),
        r["new"]["parts_loaded"].as_array().map_or(0, Vec::len),
        r["new"]["parts_total"],
        holders(&r["new"]["parts_loaded"]),
        r["new"]["verification_pattern"].as_str().unwrap_or("-")
    );
    println!(
        "current register:    {} pattern {}",
        r["current"]["state"].as_str().unwrap_or("?"),
        r["current"]["verification_pattern"].as_str().unwrap_or("-")
    );
    println!(
        "unseal register:     {} part(s) loaded by {}; approved without a part by {}",
        r["unseal"]["parts_loaded"].as_array().map_or(0, Vec::len),
        holders(&r["unseal"]["parts_loaded"]),
        match join(&r["unseal"]["approved_by"]) {
            s if s.is_empty() => "-".to_string(),
            s => s,
        }
    );
    if st["zeroized"] == true {
        println!("ZEROIZED:            the master key was destroyed; nothing unseals again");
    }
    let rot = &st["rotation"];
    if rot.is_object() {
        println!(
            "rotation:            to pattern {}: {} of {} blobs re-wrapped ({} unreadable), phase {}{}",
            rot["to_verification_pattern"].as_str().unwrap_or("-"),
            rot["blobs_done"],
            rot["blobs_total"],
            rot["blobs_unreadable"],
            rot["phase"].as_str().unwrap_or("?"),
            if rot["walking_on_this_node"] == true {
                ", running"
            } else {
                ", waiting (unseal with both keys' parts to resume)"
            }
        );
    }
    for p in st["pending"].as_array().into_iter().flatten() {
        println!(
            "pending:             {} {} signed by {} (needs {})",
            p["id"].as_str().unwrap_or("?"),
            p["verb"].as_str().unwrap_or("?"),
            join(&p["signed_by"]),
            p["required"]
        );
    }
}

fn holders(v: &Value) -> String {
    let names: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["holder"].as_str())
        .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}

fn load_part(
    c: &mut Client,
    register: &str,
    parts: Option<u8>,
    p: Option<&PartArgs>,
    s: &SignerArgs,
) -> Result<Value, CliError> {
    // Open both files first: a wrong passphrase sends nothing.
    let part = p.map(open_part).transpose()?;
    let signer = open_signer(s)?;
    let (mut cmd, st) = prepare(c, Verb::LoadPart)?;
    let tk = &st["transport_key"];
    let (tkid, public) = match (tk["id"].as_str(), tk["public_key"].as_str()) {
        (Some(id), Some(pk)) => (
            id.to_string(),
            STANDARD
                .decode(pk)
                .map_err(|_| CliError::Io("the server's transport key is not base64".into()))?,
        ),
        _ => return Err(CliError::Io("the server publishes no transport key".into())),
    };
    cmd = cmd.with("register", register);
    match &part {
        Some(part) => {
            let ctx = transport::context(&cmd.crypto_instance, &tkid, &signer.name, register);
            let (eph, ct) = transport::seal(&public, &ctx, part)?;
            cmd = cmd
                .with("ephemeral_public", STANDARD.encode(eph))
                .with("ciphertext", STANDARD.encode(ct));
        }
        // The signature over this node's transport key id binds the approval to this unseal.
        None => cmd = cmd.with("approve", "yes"),
    }
    cmd = cmd.with("transport_key_id", tkid);
    if let Some(n) = parts {
        cmd = cmd.with("parts", n.to_string());
    }
    submit(c, &cmd, &signer)
}

fn pattern_from(st: &Value, given: Option<String>) -> Result<String, CliError> {
    if let Some(p) = given {
        return Ok(p);
    }
    st["registers"]["new"]["verification_pattern"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            CliError::Refused(
                "the new master key register is not full: load every key part first".into(),
            )
        })
}

fn run(a: CeremonyArgs) -> Result<(), CliError> {
    match &a.command {
        CeremonyCommand::AdminKeygen {
            name,
            algorithm,
            out,
            passphrase_file,
        } => {
            let alg = SigAlg::parse(algorithm)?;
            let pass = secrets::new(&Source {
                what: format!("the new key {}", out.display()),
                file: passphrase_file.as_deref(),
                env: "KEYHOLD_ADMIN_PASSPHRASE",
            })?;
            let f = AdminKeyFile::generate(name, alg, pass.as_bytes(), KdfParams::default())?;
            let public_path = out.with_extension("pub");
            write_new(out, &f.to_json()?)?;
            write_new(&public_path, &f.public_only().to_json()?)?;
            println!(
                "administrator key for {name} ({}) written to {} (keep it) and {} (give it out); fingerprint {}",
                alg.as_str(),
                out.display(),
                public_path.display(),
                f.fingerprint
            );
            Ok(())
        }
        CeremonyCommand::PartGenerate {
            holder,
            out,
            part_passphrase_file,
        } => {
            let pass = secrets::new(&Source {
                what: format!("the new key part {}", out.display()),
                file: part_passphrase_file.as_deref(),
                env: "KEYHOLD_PART_PASSPHRASE",
            })?;
            let f = KeyPartFile::generate(holder, pass.as_bytes(), KdfParams::default())?;
            write_new(out, &f.to_json()?)?;
            println!(
                "key part for {holder} written to {}; verification pattern {}",
                out.display(),
                f.verification_pattern
            );
            Ok(())
        }
        CeremonyCommand::Status { json } => {
            let st = connect(&a)?.status()?;
            if *json {
                println!("{st:#}");
            } else {
                print_status(&st);
            }
            Ok(())
        }
        CeremonyCommand::AddAdmin { new_admin, signer } => {
            let s = open_signer(signer)?;
            let new = match new_admin {
                Some(p) => AdminKeyFile::from_json(&read(p)?)?,
                None => AdminKeyFile::from_json(&read(&signer.admin_key)?)?.public_only(),
            };
            let mut c = connect(&a)?;
            let (cmd, _) = prepare(&mut c, Verb::AddAdmin)?;
            let cmd = cmd
                .with("name", new.name.as_str())
                .with("algorithm", new.algorithm.as_str())
                .with("public_key", new.public_key.as_str());
            report(&submit(&mut c, &cmd, &s)?);
            Ok(())
        }
        CeremonyCommand::RemoveAdmin { name, signer } => {
            let s = open_signer(signer)?;
            let mut c = connect(&a)?;
            let (cmd, _) = prepare(&mut c, Verb::RemoveAdmin)?;
            report(&submit(&mut c, &cmd.with("name", name.as_str()), &s)?);
            Ok(())
        }
        CeremonyCommand::SetThresholds {
            signature,
            revocation,
            signer,
        } => {
            let s = open_signer(signer)?;
            let mut c = connect(&a)?;
            let (cmd, _) = prepare(&mut c, Verb::SetThresholds)?;
            let cmd = cmd
                .with("signature", signature.to_string())
                .with("revocation", revocation.to_string());
            report(&submit(&mut c, &cmd, &s)?);
            Ok(())
        }
        CeremonyCommand::ExitImprint { signer } => {
            let s = open_signer(signer)?;
            let mut c = connect(&a)?;
            let (cmd, _) = prepare(&mut c, Verb::ExitImprint)?;
            report(&submit(&mut c, &cmd, &s)?);
            Ok(())
        }
        CeremonyCommand::LoadPart {
            parts,
            part,
            signer,
        } => {
            let mut c = connect(&a)?;
            report(&load_part(&mut c, "new", Some(*parts), Some(part), signer)?);
            Ok(())
        }
        CeremonyCommand::Unseal {
            part,
            part_passphrase_file,
            signer,
        } => {
            let part = part.as_ref().map(|p| PartArgs {
                part: p.clone(),
                part_passphrase_file: part_passphrase_file.clone(),
            });
            let mut c = connect(&a)?;
            report(&load_part(&mut c, "unseal", None, part.as_ref(), signer)?);
            Ok(())
        }
        CeremonyCommand::Zeroize {
            verification_pattern,
            signer,
        } => {
            let s = open_signer(signer)?;
            let mut c = connect(&a)?;
            let (cmd, _) = prepare(&mut c, Verb::Zeroize)?;
            let cmd = cmd.with("verification_pattern", verification_pattern.as_str());
            report(&submit(&mut c, &cmd, &s)?);
            Ok(())
        }
        CeremonyCommand::Commit {
            verification_pattern,
            signer,
        }
        | CeremonyCommand::Activate {
            verification_pattern,
            signer,
        }
        | CeremonyCommand::Rotate {
            verification_pattern,
            signer,
        } => {
            let rotate = matches!(a.command, CeremonyCommand::Rotate { .. });
            let verb = if matches!(a.command, CeremonyCommand::Commit { .. }) {
                Verb::Commit
            } else {
                Verb::Activate
            };
            let s = open_signer(signer)?;
            let mut c = connect(&a)?;
            let (cmd, st) = prepare(&mut c, verb)?;
            let current = st["registers"]["current"]["state"].as_str() == Some("valid");
            if rotate && !current {
                return Err(CliError::Refused(
                    "no master key is current: the first key is made current with `activate`"
                        .into(),
                ));
            }
            if verb == Verb::Activate && !rotate && current {
                return Err(CliError::Usage(
                    "a master key is current: a new one replaces it with `keyhold ceremony rotate`"
                        .into(),
                ));
            }
            let vp = pattern_from(&st, verification_pattern.clone())?;
            println!("new master key verification pattern: {vp}");
            report(&submit(&mut c, &cmd.with("verification_pattern", vp), &s)?);
            Ok(())
        }
    }
}

pub fn main(a: CeremonyArgs) -> ExitCode {
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyhold ceremony: {e}");
            ExitCode::FAILURE
        }
    }
}
