//! `keyhold instances …` (the resource controller) and `keyhold authorizations …`
//! (service-to-service): account-level, no key-management instance needed.

use clap::Subcommand;
use keyhold_client::instances::NewInstance;
use keyhold_client::Client;
use serde_json::{json, Value};

use super::error::{CliError, CliResult};
use super::output;
use super::profile::Output;

#[derive(Subcommand, Debug)]
pub enum InstancesCmd {
    /// Provision a service instance: a crypto instance (hs-crypto), a key-management
    /// instance (kms; bound to a crypto instance with --crypto-instance, else on the shared
    /// unit) or any other service's instance (e.g. cloud-object-storage).
    #[command(
        after_help = "Examples:\n  keyhold instances create my-crypto --service hs-crypto --units 2\n  \
keyhold instances create my-kms --service kms --crypto-instance 0f6e…-uuid\n  \
keyhold instances create shared-kms --service kms\n  \
keyhold instances create photos --service cloud-object-storage -o json"
    )]
    Create {
        name: String,
        /// hs-crypto, kms, or another service's name.
        #[arg(long)]
        service: String,
        /// standard or dedicated (kms: inferred from --crypto-instance).
        #[arg(long)]
        plan: Option<String>,
        /// Crypto units of an hs-crypto instance (1–8; default 1).
        #[arg(long)]
        units: Option<u32>,
        /// The hs-crypto instance (id or CRN) a kms instance uses (dedicated, KYOK).
        #[arg(long, value_name = "ID")]
        crypto_instance: Option<String>,
    },
    /// List the account's instances.
    #[command(
        after_help = "Examples:\n  keyhold instances list\n  keyhold instances list --service hs-crypto -o json"
    )]
    List {
        /// Only instances of this service.
        #[arg(long)]
        service: Option<String>,
    },
    /// Show one instance (by id or CRN).
    #[command(after_help = "Example:\n  keyhold instances get 0f6e…-uuid")]
    Get { id: String },
    /// Rename an instance, or change an hs-crypto instance's crypto units.
    #[command(
        after_help = "Examples:\n  keyhold instances update 0f6e…-uuid --name prod-crypto\n  keyhold instances update 0f6e…-uuid --units 3"
    )]
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        units: Option<u32>,
    },
    /// Delete an instance. A crypto instance a kms instance uses is refused (exit 4); so is
    /// a kms instance holding keys, unless --force (kept pending reclamation with its keys).
    #[command(
        after_help = "Examples:\n  keyhold instances delete 0f6e…-uuid\n  keyhold instances delete 7a1b…-uuid --force"
    )]
    Delete {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// A crypto instance's connection info: its KMS and EP11 endpoints (host:port).
    #[command(
        name = "connection-info",
        after_help = "Example:\n  keyhold instances connection-info 0f6e…-uuid -o json"
    )]
    ConnectionInfo { id: String },
    /// Create a credential (API key) for a service instance, whose principal is the instance:
    /// what a storage service uses to call Keyhold. The API key is printed once.
    #[command(
        after_help = "Example:\n  keyhold instances credentials 5d2c…-uuid --name photos-kms -o json"
    )]
    Credentials {
        id: String,
        #[arg(long, default_value = "credentials")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuthorizationsCmd {
    /// Authorize a source service (or one of its instances) to act on a target service
    /// (kms or hs-crypto, or one instance) with service roles.
    #[command(
        after_help = "Examples:\n  keyhold authorizations create --source-service kms --source-id 7a1b…-uuid \\\n      \
--target-service hs-crypto --target-id 0f6e…-uuid --role Reader\n  \
keyhold authorizations create --source-service cloud-object-storage --target-service kms --role Reader"
    )]
    Create {
        #[arg(long)]
        source_service: String,
        /// One instance of the source service [default: every instance].
        #[arg(long, value_name = "ID")]
        source_id: Option<String>,
        #[arg(long)]
        target_service: String,
        /// One instance of the target service [default: every instance].
        #[arg(long, value_name = "ID")]
        target_id: Option<String>,
        /// Reader, ReaderPlus, Writer or Manager (repeatable).
        #[arg(long = "role", default_value = "Reader")]
        roles: Vec<String>,
    },
    /// List the account's authorizations.
    #[command(after_help = "Example:\n  keyhold authorizations list -o json")]
    List,
    /// Remove an authorization (what it allowed stops within a second).
    #[command(after_help = "Example:\n  keyhold authorizations delete 3c9d…-uuid")]
    Delete { id: String },
}

fn s(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn instance_row(v: &Value) -> Vec<String> {
    vec![
        s(v, "guid"),
        s(v, "name"),
        s(v, "resource_id"),
        s(v, "plan"),
        s(v, "state"),
        v.get("parameters")
            .map(|p| p.to_string())
            .unwrap_or_default(),
    ]
}

const INSTANCE_HEADERS: [&str; 6] = ["ID", "NAME", "SERVICE", "PLAN", "STATE", "PARAMETERS"];

fn instance(out: Output, v: &Value) -> CliResult<()> {
    match out {
        Output::Json => output::json(v),
        Output::Table => {
            output::table(&INSTANCE_HEADERS, &[instance_row(v)]);
            Ok(())
        }
    }
}

fn party(v: &Value, side: &str) -> String {
    let p = v.get(side).cloned().unwrap_or(Value::Null);
    match p.get("instance_id").and_then(Value::as_str) {
        Some(i) => format!("{}/{i}", s(&p, "service_name")),
        None => s(&p, "service_name"),
    }
}

fn authorization_row(v: &Value) -> Vec<String> {
    let roles: Vec<String> = v
        .get("roles")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    vec![
        s(v, "id"),
        party(v, "source"),
        party(v, "target"),
        roles.join(","),
    ]
}

const AUTHORIZATION_HEADERS: [&str; 4] = ["ID", "SOURCE", "TARGET", "ROLES"];

pub async fn instances(c: &Client, out: Output, cmd: InstancesCmd) -> CliResult<()> {
    match cmd {
        InstancesCmd::Create {
            name,
            service,
            plan,
            units,
            crypto_instance,
        } => {
            let n = NewInstance {
                name,
                service,
                plan,
                units,
                crypto_instance,
            };
            instance(out, &c.create_instance(&n).await?)
        }
        InstancesCmd::List { service } => {
            let list = c.list_instances(service.as_deref()).await?;
            match out {
                Output::Json => output::json(&list),
                Output::Table => {
                    let rows: Vec<Vec<String>> = list.iter().map(instance_row).collect();
                    output::table(&INSTANCE_HEADERS, &rows);
                    Ok(())
                }
            }
        }
        InstancesCmd::Get { id } => {
            let v = c.get_instance(&id).await?;
            match out {
                Output::Json => output::json(&v),
                Output::Table => output::values(out, &[v]),
            }
        }
        InstancesCmd::Update { id, name, units } => {
            if name.is_none() && units.is_none() {
                return Err(CliError::Usage(
                    "nothing to change: give --name or --units".into(),
                ));
            }
            instance(out, &c.update_instance(&id, name.as_deref(), units).await?)
        }
        InstancesCmd::Delete { id, force } => match c.delete_instance(&id, force).await? {
            None => output::done(out, &format!("instance {id} deleted"), json!({"id": id})),
            Some(kept) => output::done(
                out,
                &format!(
                    "instance {id} still held keys: kept pending reclamation (keys kept, unusable)"
                ),
                json!({"id": id, "state": s(&kept, "state")}),
            ),
        },
        InstancesCmd::ConnectionInfo { id } => {
            let v = c.connection_info(&id).await?;
            match out {
                Output::Json => output::json(&v),
                Output::Table => {
                    let at = |a: &str, b: &str| {
                        v.get(a)
                            .and_then(|x| x.get(b))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    output::fields(&[
                        ("instance", s(&v, "instance_id")),
                        ("kms public", at("kms", "public")),
                        ("kms private", at("kms", "private")),
                        ("ep11 public", at("ep11", "public")),
                        ("ep11 private", at("ep11", "private")),
                    ]);
                    Ok(())
                }
            }
        }
        InstancesCmd::Credentials { id, name } => {
            let v = c.create_resource_key(&id, &name).await?;
            match out {
                Output::Json => output::json(&v),
                Output::Table => {
                    let cred = v.get("credentials").cloned().unwrap_or(Value::Null);
                    output::fields(&[
                        ("id", s(&v, "guid")),
                        ("name", s(&v, "name")),
                        ("source", s(&v, "source_crn")),
                        ("principal", s(&cred, "iam_serviceid_crn")),
                        ("apikey (shown once)", s(&cred, "apikey")),
                    ]);
                    Ok(())
                }
            }
        }
    }
}

pub async fn authorizations(c: &Client, out: Output, cmd: AuthorizationsCmd) -> CliResult<()> {
    match cmd {
        AuthorizationsCmd::Create {
            source_service,
            source_id,
            target_service,
            target_id,
            roles,
        } => {
            let a = c
                .create_authorization(
                    (&source_service, source_id.as_deref()),
                    (&target_service, target_id.as_deref()),
                    &roles,
                )
                .await?;
            match out {
                Output::Json => output::json(&a),
                Output::Table => {
                    output::table(&AUTHORIZATION_HEADERS, &[authorization_row(&a)]);
                    Ok(())
                }
            }
        }
        AuthorizationsCmd::List => {
            let list = c.list_authorizations().await?;
            match out {
                Output::Json => output::json(&list),
                Output::Table => {
                    let rows: Vec<Vec<String>> = list.iter().map(authorization_row).collect();
                    output::table(&AUTHORIZATION_HEADERS, &rows);
                    Ok(())
                }
            }
        }
        AuthorizationsCmd::Delete { id } => {
            c.delete_authorization(&id).await?;
            output::done(
                out,
                &format!("authorization {id} deleted"),
                json!({"id": id}),
            )
        }
    }
}
