//! `keyhold policies|aliases|rings|import-token …`.

use clap::{Args, Subcommand};
use keyhold_client::Client;
use serde_json::{json, Value};

use super::error::{CliError, CliResult};
use super::output;
use super::profile::Output;

#[derive(Subcommand, Debug)]
pub enum PoliciesCmd {
    /// Show a key's policies.
    #[command(after_help = "Example:\n  keyhold policies show my-root-key")]
    Show { key: String },
    /// Set a key's rotation policy.
    #[command(
        after_help = "Examples:\n  keyhold policies set-rotation my-root-key --months 3\n  keyhold policies set-rotation my-root-key --disable"
    )]
    SetRotation {
        key: String,
        /// Rotate every N months (1–12).
        #[arg(long, required_unless_present = "disable")]
        months: Option<u32>,
        /// Turn automatic rotation off.
        #[arg(long)]
        disable: bool,
    },
    /// Turn dual-authorization delete on or off for a key.
    #[command(
        after_help = "Example:\n  keyhold policies set-dual-auth my-root-key --enabled true"
    )]
    SetDualAuth {
        key: String,
        #[arg(long, action = clap::ArgAction::Set)]
        enabled: bool,
    },
    /// Show the instance's policies.
    #[command(after_help = "Example:\n  keyhold policies instance")]
    Instance,
    /// Set one instance policy from its JSON policy_data.
    #[command(
        after_help = "Examples:\n  keyhold policies set-instance dualAuthDelete '{\"enabled\":false}'\n  \
keyhold policies set-instance rotation '{\"enabled\":true,\"attributes\":{\"interval_month\":3}}'"
    )]
    SetInstance {
        /// allowedNetwork, dualAuthDelete, allowedIP, keyCreateImportAccess, metrics or rotation.
        policy_type: String,
        /// The policy_data object, as JSON.
        data: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AliasesCmd {
    /// Add an alias to a key.
    #[command(after_help = "Example:\n  keyhold aliases create 6f3c…-uuid backups-key")]
    Create { key: String, alias: String },
    /// Remove an alias (the key stays).
    #[command(after_help = "Example:\n  keyhold aliases delete 6f3c…-uuid backups-key")]
    Delete { key: String, alias: String },
    /// List a key's aliases.
    #[command(after_help = "Example:\n  keyhold aliases list my-root-key")]
    List { key: String },
}

#[derive(Subcommand, Debug)]
pub enum RingsCmd {
    /// List key rings.
    #[command(after_help = "Example:\n  keyhold rings list")]
    List,
    /// Create a key ring.
    #[command(after_help = "Example:\n  keyhold rings create team-a")]
    Create { id: String },
    /// Delete a key ring (it must hold no live keys).
    #[command(
        after_help = "Examples:\n  keyhold rings delete team-a\n  keyhold rings delete team-a --force"
    )]
    Delete {
        id: String,
        /// Move its destroyed keys to the default ring first.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImportTokenCmd {
    /// Create the instance's import token (replaces the previous one).
    #[command(
        after_help = "Example:\n  keyhold import-token create --expiration 1200 --max-retrievals 3"
    )]
    Create(TokenCreateArgs),
    /// Retrieve the import token (uses one retrieval).
    #[command(after_help = "Example:\n  keyhold import-token show --show-public-key")]
    Show {
        /// Print the RSA public key and nonce too.
        #[arg(long)]
        show_public_key: bool,
    },
}

#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// Lifetime in seconds (300–86400).
    #[arg(long)]
    pub expiration: Option<u32>,
    /// How many times it may be retrieved (1–500).
    #[arg(long)]
    pub max_retrievals: Option<u32>,
}

pub async fn policies(c: &Client, out: Output, cmd: PoliciesCmd) -> CliResult<()> {
    match cmd {
        PoliciesCmd::Show { key } => output::values(out, &c.key_policies(&key).await?),
        PoliciesCmd::SetRotation {
            key,
            months,
            disable,
        } => output::values(out, &c.set_rotation_policy(&key, !disable, months).await?),
        PoliciesCmd::SetDualAuth { key, enabled } => {
            output::values(out, &c.set_dual_auth_policy(&key, enabled).await?)
        }
        PoliciesCmd::Instance => output::values(out, &c.instance_policies().await?),
        PoliciesCmd::SetInstance { policy_type, data } => {
            let data: Value = serde_json::from_str(&data)
                .map_err(|e| CliError::Usage(format!("policy data is not JSON: {e}")))?;
            c.set_instance_policy(&policy_type, data).await?;
            output::done(
                out,
                &format!("instance policy {policy_type} set"),
                json!({}),
            )
        }
    }
}

pub async fn aliases(c: &Client, out: Output, cmd: AliasesCmd) -> CliResult<()> {
    match cmd {
        AliasesCmd::Create { key, alias } => {
            let a = c.create_alias(&key, &alias).await?;
            match out {
                Output::Json => output::json(&a),
                Output::Table => {
                    println!("alias {} now names key {}", a.alias, a.key_id);
                    Ok(())
                }
            }
        }
        AliasesCmd::Delete { key, alias } => {
            c.delete_alias(&key, &alias).await?;
            output::done(out, &format!("alias {alias} deleted"), json!({}))
        }
        AliasesCmd::List { key } => {
            let k = c.get_key_metadata(&key).await?;
            match out {
                Output::Json => output::json(&k.aliases),
                Output::Table => {
                    let rows: Vec<Vec<String>> = k
                        .aliases
                        .iter()
                        .map(|a| vec![a.clone(), k.id.clone()])
                        .collect();
                    output::table(&["ALIAS", "KEY"], &rows);
                    Ok(())
                }
            }
        }
    }
}

pub async fn rings(c: &Client, out: Output, cmd: RingsCmd) -> CliResult<()> {
    match cmd {
        RingsCmd::List => {
            let rs = c.list_key_rings().await?;
            match out {
                Output::Json => output::json(&rs),
                Output::Table => {
                    let rows: Vec<Vec<String>> = rs
                        .iter()
                        .map(|r| {
                            vec![
                                r.id.clone(),
                                r.creation_date.clone().unwrap_or_default(),
                                r.created_by.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    output::table(&["ID", "CREATED", "CREATED BY"], &rows);
                    Ok(())
                }
            }
        }
        RingsCmd::Create { id } => {
            c.create_key_ring(&id).await?;
            output::done(out, &format!("key ring {id} created"), json!({"id": id}))
        }
        RingsCmd::Delete { id, force } => {
            c.delete_key_ring(&id, force).await?;
            output::done(out, &format!("key ring {id} deleted"), json!({"id": id}))
        }
    }
}

pub async fn import_token(c: &Client, out: Output, cmd: ImportTokenCmd) -> CliResult<()> {
    let mut t = match cmd {
        ImportTokenCmd::Create(a) => {
            c.create_import_token(a.expiration, a.max_retrievals)
                .await?
        }
        ImportTokenCmd::Show { show_public_key } => {
            let mut t = c.get_import_token().await?;
            if !show_public_key {
                t.payload = None;
                t.nonce = None;
            }
            t
        }
    };
    match out {
        Output::Json => output::json(&t),
        Output::Table => {
            let mut pairs = vec![
                ("created", t.creation_date.take().unwrap_or_default()),
                ("expires", t.expiration_date.take().unwrap_or_default()),
                (
                    "max retrievals",
                    t.max_allowed_retrievals
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                ),
                (
                    "remaining",
                    t.remaining_retrievals
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                ),
            ];
            if let Some(p) = t.payload.take() {
                pairs.push(("public key (base64 PEM)", p));
            }
            if let Some(n) = t.nonce.take() {
                pairs.push(("nonce", n));
            }
            output::fields(&pairs);
            Ok(())
        }
    }
}
