//! `keyhold login` and `keyhold iam …`: who you are, and the account's users,
//! service IDs, access groups, API keys and access policies.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use keyhold_client::iam::Collection;
use keyhold_client::Client;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::error::{CliError, CliResult};
use super::output;
use super::profile::{config_path, load_config, save_config, ConnArgs, Output, Profile};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Save the connection as this profile (and make it the default).
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub save_as: String,
}

/// `keyhold login`: checks the API key, prints who it belongs to, and saves URL,
/// instance and API key in a profile (the config file is written mode 0600).
pub async fn login(c: &Client, conn: &ConnArgs, out: Output, args: LoginArgs) -> CliResult<()> {
    let me = c.whoami().await?;
    let cfg = c.config();
    let path = config_path(conn);
    let mut file = load_config(&path)?;
    let profile = Profile {
        url: Some(cfg.url.clone()),
        iam_url: Some(cfg.iam_url.clone()),
        instance_id: (!cfg.instance_id.is_empty()).then(|| cfg.instance_id.clone()),
        apikey: Some(cfg.apikey.to_string()),
        key_ring: cfg.key_ring.clone(),
        ..Profile::default()
    };
    file.profiles.insert(args.save_as.clone(), profile);
    file.default_profile = Some(args.save_as.clone());
    save_config(&path, &file)?;
    let who = format!(
        "logged in to {} as {} ({}, account {}){}; profile {} saved in {}",
        cfg.url,
        me["iam_id"].as_str().unwrap_or("?"),
        me["type"].as_str().unwrap_or("?"),
        me["account_id"].as_str().unwrap_or("?"),
        if me["iam_admin"].as_bool() == Some(true) {
            ", account administrator"
        } else {
            ""
        },
        args.save_as,
        path.display()
    );
    output::done(out, &who, json!({"whoami": me, "profile": args.save_as}))
}

#[derive(Subcommand, Debug)]
pub enum IamCmd {
    /// Who the API key belongs to, and whether it may manage IAM.
    #[command(after_help = "Example:\n  keyhold iam whoami -o json")]
    Whoami,
    /// Keyhold-local users.
    #[command(
        subcommand,
        after_help = "Examples:\n  keyhold iam users create alice@example.com\n  keyhold iam users list\n  keyhold iam users delete user-6f3c…"
    )]
    Users(SimpleCmd),
    /// Service IDs (identities for applications).
    #[command(
        subcommand,
        name = "service-ids",
        after_help = "Examples:\n  keyhold iam service-ids create backup-job --description nightly\n  keyhold iam service-ids list"
    )]
    ServiceIds(SimpleCmd),
    /// Access groups and their members.
    #[command(
        subcommand,
        name = "access-groups",
        after_help = "Examples:\n  keyhold iam access-groups create readers\n  \
keyhold iam access-groups add-member AccessGroupId-… iam-ServiceId-…\n  keyhold iam access-groups members AccessGroupId-…"
    )]
    AccessGroups(GroupCmd),
    /// API keys: yours, or (administrators) anyone's in the account.
    #[command(
        subcommand,
        name = "api-keys",
        after_help = "Examples:\n  keyhold iam api-keys create ci-key --iam-id iam-ServiceId-… --out ci.key\n  \
keyhold iam api-keys rotate ApiKey-… --out ci.key\n  keyhold iam api-keys list"
    )]
    ApiKeys(ApiKeyCmd),
    /// Access policies: roles for a user, service ID or access group on the account,
    /// an instance, a key ring or a key.
    #[command(
        subcommand,
        after_help = "Examples:\n  keyhold iam policies create --subject iam-ServiceId-… --role Reader --instance 1234…\n  \
keyhold iam policies create --subject AccessGroupId-… --role Writer --instance 1234… --key-ring team-a\n  \
keyhold iam policies list --iam-id iam-ServiceId-…"
    )]
    Policies(PolicyCmd),
}

#[derive(Subcommand, Debug)]
pub enum SimpleCmd {
    /// List them.
    #[command(
        after_help = "Example:\n  keyhold iam users list -o json   # or: keyhold iam service-ids list"
    )]
    List,
    /// Create one (a user's name is its login name, e.g. an e-mail address).
    #[command(
        after_help = "Example:\n  keyhold iam users create alice@example.com   # or: keyhold iam service-ids create backup-job --description nightly"
    )]
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one.
    #[command(after_help = "Example:\n  keyhold iam service-ids get iam-ServiceId-…")]
    Get { id: String },
    /// Delete one, with its API keys, group memberships and policies.
    #[command(after_help = "Example:\n  keyhold iam users delete user-…")]
    Delete { id: String },
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    #[command(after_help = "Example:\n  keyhold iam access-groups list")]
    List,
    #[command(
        after_help = "Example:\n  keyhold iam access-groups create readers --description \"read-only apps\""
    )]
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    #[command(after_help = "Example:\n  keyhold iam access-groups get AccessGroupId-…")]
    Get { id: String },
    /// Delete a group, its memberships and its policies.
    #[command(after_help = "Example:\n  keyhold iam access-groups delete AccessGroupId-…")]
    Delete { id: String },
    /// List a group's members.
    #[command(after_help = "Example:\n  keyhold iam access-groups members AccessGroupId-…")]
    Members { id: String },
    /// Add users or service IDs to a group.
    #[command(
        after_help = "Example:\n  keyhold iam access-groups add-member AccessGroupId-… iam-ServiceId-… user-…"
    )]
    AddMember {
        id: String,
        #[arg(required = true)]
        iam_ids: Vec<String>,
    },
    /// Remove a member from a group.
    #[command(
        after_help = "Example:\n  keyhold iam access-groups remove-member AccessGroupId-… user-…"
    )]
    RemoveMember { id: String, iam_id: String },
}

#[derive(Subcommand, Debug)]
pub enum ApiKeyCmd {
    /// Your API keys (administrators: all, or --iam-id's).
    #[command(after_help = "Example:\n  keyhold iam api-keys list --iam-id iam-ServiceId-…")]
    List {
        #[arg(long)]
        iam_id: Option<String>,
    },
    /// Create an API key; its secret is shown only now (or written to --out, mode 0600).
    #[command(
        after_help = "Example:\n  keyhold iam api-keys create ci-key --iam-id iam-ServiceId-… --out ci.key"
    )]
    Create {
        name: String,
        /// Whose key [default: yours].
        #[arg(long)]
        iam_id: Option<String>,
        /// Write the secret to this file instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    #[command(after_help = "Example:\n  keyhold iam api-keys get ApiKey-…")]
    Get { id: String },
    /// Delete an API key: no new tokens from it, nor refreshes of tokens it gave.
    #[command(after_help = "Example:\n  keyhold iam api-keys delete ApiKey-…")]
    Delete { id: String },
    /// A new secret for the key; the old one stops working.
    #[command(after_help = "Example:\n  keyhold iam api-keys rotate ApiKey-… --out ci.key")]
    Rotate {
        id: String,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    #[command(
        after_help = "Example:\n  keyhold iam policies list --access-group-id AccessGroupId-…"
    )]
    List {
        #[arg(long, conflicts_with = "access_group_id")]
        iam_id: Option<String>,
        #[arg(long)]
        access_group_id: Option<String>,
    },
    /// Create an access policy.
    #[command(
        after_help = "Example:\n  keyhold iam policies create --subject iam-ServiceId-… --role Reader --on-instance 1234… --on-key 5678…"
    )]
    Create {
        /// A user's or service ID's iam_id, or an access group id (AccessGroupId-…).
        #[arg(long)]
        subject: String,
        /// Service roles (Reader, ReaderPlus, Writer, Manager, KeyPurge,
        /// KmipAdapterManager) and platform roles (Viewer, Operator, Editor, Administrator).
        #[arg(long = "role", required = true, value_name = "ROLE")]
        roles: Vec<String>,
        /// The service (kms or hs-crypto) [default: every service of the account].
        #[arg(long)]
        service: Option<String>,
        /// Only this instance (implies --service kms unless given).
        #[arg(long = "on-instance", value_name = "INSTANCE_ID")]
        on_instance: Option<String>,
        /// Only this key ring of the instance.
        #[arg(
            long = "on-key-ring",
            conflicts_with = "on_key",
            requires = "on_instance",
            value_name = "RING"
        )]
        on_key_ring: Option<String>,
        /// Only this key of the instance.
        #[arg(long = "on-key", requires = "on_instance", value_name = "KEY_ID")]
        on_key: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    #[command(after_help = "Example:\n  keyhold iam policies get 0f1e…")]
    Get { id: String },
    #[command(after_help = "Example:\n  keyhold iam policies delete 0f1e…")]
    Delete { id: String },
}

const SERVICE_ROLES: &[&str] = &[
    "Reader",
    "ReaderPlus",
    "Writer",
    "Manager",
    "KeyPurge",
    "KmipAdapterManager",
];
const PLATFORM_ROLES: &[&str] = &["Viewer", "Operator", "Editor", "Administrator"];

fn role_crn(name: &str) -> CliResult<String> {
    if SERVICE_ROLES.contains(&name) {
        Ok(format!("crn:v1:bluemix:public:iam::::serviceRole:{name}"))
    } else if PLATFORM_ROLES.contains(&name) {
        Ok(format!("crn:v1:bluemix:public:iam::::role:{name}"))
    } else if name.starts_with("crn:") {
        Ok(name.to_string())
    } else {
        Err(CliError::Usage(format!(
            "unknown role {name:?}: one of {}, {}",
            SERVICE_ROLES.join(", "),
            PLATFORM_ROLES.join(", ")
        )))
    }
}

fn print_list(out: Output, items: &[Value], cols: &[(&str, &str)]) -> CliResult<()> {
    match out {
        Output::Json => output::json(items),
        Output::Table => {
            let headers: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|v| {
                    cols.iter()
                        .map(|(_, f)| match &v[*f] {
                            Value::String(s) => s.clone(),
                            Value::Null => String::new(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .collect();
            output::table(&headers, &rows);
            Ok(())
        }
    }
}

fn one(out: Output, v: Value) -> CliResult<()> {
    output::values(out, &[v])
}

/// Prints a new or rotated key: the secret once on stdout, or into `file` (0600).
fn secret_out(out: Output, mut v: Value, file: Option<PathBuf>) -> CliResult<()> {
    let secret = Zeroizing::new(v["apikey"].as_str().unwrap_or_default().to_string());
    if let Some(path) = file {
        write_secret(&path, secret.as_bytes())?;
        if let Some(m) = v.as_object_mut() {
            m.remove("apikey");
            m.insert("apikey_file".into(), json!(path.display().to_string()));
        }
    }
    one(out, v)
}

fn write_secret(path: &std::path::Path, bytes: &[u8]) -> CliResult<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::Local(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    Ok(())
}

const ID_NAME: &[(&str, &str)] = &[
    ("IAM_ID", "iam_id"),
    ("NAME", "name"),
    ("CREATED", "created_at"),
];

pub async fn run(c: &Client, out: Output, cmd: IamCmd) -> CliResult<()> {
    match cmd {
        IamCmd::Whoami => one(out, c.whoami().await?),
        IamCmd::Users(cmd) => simple(c, out, Collection::Users, cmd).await,
        IamCmd::ServiceIds(cmd) => simple(c, out, Collection::ServiceIds, cmd).await,
        IamCmd::AccessGroups(cmd) => groups(c, out, cmd).await,
        IamCmd::ApiKeys(cmd) => api_keys(c, out, cmd).await,
        IamCmd::Policies(cmd) => policies(c, out, cmd).await,
    }
}

async fn simple(c: &Client, out: Output, coll: Collection, cmd: SimpleCmd) -> CliResult<()> {
    match cmd {
        SimpleCmd::List => {
            let items = c.iam_list(coll, &[]).await?;
            let cols: &[(&str, &str)] = if coll == Collection::Users {
                &[
                    ("IAM_ID", "iam_id"),
                    ("USER_ID", "user_id"),
                    ("CREATED", "created_at"),
                ]
            } else {
                ID_NAME
            };
            print_list(out, &items, cols)
        }
        SimpleCmd::Create { name, description } => {
            let body = if coll == Collection::Users {
                json!({"user_id": name})
            } else {
                json!({"name": name, "description": description})
            };
            one(out, c.iam_create(coll, body).await?)
        }
        SimpleCmd::Get { id } => one(out, c.iam_get(coll, &id).await?),
        SimpleCmd::Delete { id } => {
            c.iam_delete(coll, &id).await?;
            output::done(out, &format!("deleted {id}"), json!({"id": id}))
        }
    }
}

async fn groups(c: &Client, out: Output, cmd: GroupCmd) -> CliResult<()> {
    let coll = Collection::Groups;
    match cmd {
        GroupCmd::List => print_list(
            out,
            &c.iam_list(coll, &[]).await?,
            &[
                ("ID", "id"),
                ("NAME", "name"),
                ("DESCRIPTION", "description"),
            ],
        ),
        GroupCmd::Create { name, description } => one(
            out,
            c.iam_create(coll, json!({"name": name, "description": description}))
                .await?,
        ),
        GroupCmd::Get { id } => one(out, c.iam_get(coll, &id).await?),
        GroupCmd::Delete { id } => {
            c.iam_delete(coll, &id).await?;
            output::done(out, &format!("deleted {id}"), json!({"id": id}))
        }
        GroupCmd::Members { id } => print_list(
            out,
            &c.group_members(&id).await?,
            &[("IAM_ID", "iam_id"), ("TYPE", "type")],
        ),
        GroupCmd::AddMember { id, iam_ids } => print_list(
            out,
            &c.add_group_members(&id, &iam_ids).await?,
            &[("IAM_ID", "iam_id"), ("TYPE", "type")],
        ),
        GroupCmd::RemoveMember { id, iam_id } => {
            c.remove_group_member(&id, &iam_id).await?;
            output::done(
                out,
                &format!("removed {iam_id} from {id}"),
                json!({"id": id, "iam_id": iam_id}),
            )
        }
    }
}

async fn api_keys(c: &Client, out: Output, cmd: ApiKeyCmd) -> CliResult<()> {
    let coll = Collection::ApiKeys;
    match cmd {
        ApiKeyCmd::List { iam_id } => {
            let filter: Vec<(&'static str, String)> =
                iam_id.map(|i| vec![("iam_id", i)]).unwrap_or_default();
            print_list(
                out,
                &c.iam_list(coll, &filter).await?,
                &[
                    ("ID", "id"),
                    ("NAME", "name"),
                    ("IAM_ID", "iam_id"),
                    ("CREATED", "created_at"),
                ],
            )
        }
        ApiKeyCmd::Create {
            name,
            iam_id,
            out: file,
        } => {
            let mut body = json!({ "name": name });
            if let Some(i) = iam_id {
                body["iam_id"] = json!(i);
            }
            secret_out(out, c.iam_create(coll, body).await?, file)
        }
        ApiKeyCmd::Get { id } => one(out, c.iam_get(coll, &id).await?),
        ApiKeyCmd::Delete { id } => {
            c.iam_delete(coll, &id).await?;
            output::done(out, &format!("deleted {id}"), json!({"id": id}))
        }
        ApiKeyCmd::Rotate { id, out: file } => secret_out(out, c.rotate_api_key(&id).await?, file),
    }
}

async fn policies(c: &Client, out: Output, cmd: PolicyCmd) -> CliResult<()> {
    let coll = Collection::Policies;
    match cmd {
        PolicyCmd::List {
            iam_id,
            access_group_id,
        } => {
            let mut filter: Vec<(&'static str, String)> = Vec::new();
            if let Some(i) = iam_id {
                filter.push(("iam_id", i));
            }
            if let Some(g) = access_group_id {
                filter.push(("access_group_id", g));
            }
            let items: Vec<Value> = c
                .iam_list(coll, &filter)
                .await?
                .into_iter()
                .map(summarize_policy)
                .collect();
            match out {
                Output::Json => output::json(&items),
                Output::Table => print_list(
                    out,
                    &items,
                    &[
                        ("ID", "id"),
                        ("SUBJECT", "subject"),
                        ("ROLES", "roles"),
                        ("SCOPE", "scope"),
                    ],
                ),
            }
        }
        PolicyCmd::Create {
            subject,
            roles,
            service,
            on_instance,
            on_key_ring,
            on_key,
            description,
        } => {
            let account = c.whoami().await?["account_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut attrs = vec![json!({"name": "accountId", "value": account})];
            let service = service.or(on_instance.as_ref().map(|_| "kms".to_string()));
            if let Some(s) = service {
                attrs.push(json!({"name": "serviceName", "value": s}));
            }
            if let Some(i) = on_instance {
                attrs.push(json!({"name": "serviceInstance", "value": i}));
            }
            if let Some(r) = on_key_ring {
                attrs.push(json!({"name": "resourceType", "value": "key-ring"}));
                attrs.push(json!({"name": "resource", "value": r}));
            }
            if let Some(k) = on_key {
                attrs.push(json!({"name": "resourceType", "value": "key"}));
                attrs.push(json!({"name": "resource", "value": k}));
            }
            let subject_attr = if subject.starts_with("AccessGroupId-") {
                "access_group_id"
            } else {
                "iam_id"
            };
            let role_list = roles
                .iter()
                .map(|r| role_crn(r).map(|crn| json!({ "role_id": crn })))
                .collect::<CliResult<Vec<_>>>()?;
            let body = json!({"type": "access", "description": description,
                "subjects": [{"attributes": [{"name": subject_attr, "value": subject}]}],
                "roles": role_list, "resources": [{"attributes": attrs}]});
            let created = c.iam_create(coll, body).await?;
            match out {
                Output::Json => output::json(&created),
                Output::Table => one(out, summarize_policy(created)),
            }
        }
        PolicyCmd::Get { id } => {
            let p = c.iam_get(coll, &id).await?;
            match out {
                Output::Json => output::json(&p),
                Output::Table => one(out, summarize_policy(p)),
            }
        }
        PolicyCmd::Delete { id } => {
            c.iam_delete(coll, &id).await?;
            output::done(out, &format!("deleted {id}"), json!({"id": id}))
        }
    }
}

/// A policy in one line per field: subject, role names, scope.
fn summarize_policy(p: Value) -> Value {
    let subject = p["subjects"][0]["attributes"][0]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let roles: Vec<&str> = p["roles"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["role_id"].as_str())
                .map(|crn| crn.rsplit(':').next().unwrap_or(crn))
                .collect()
        })
        .unwrap_or_default();
    let scope: Vec<String> = p["resources"][0]["attributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    format!(
                        "{}={}",
                        x["name"].as_str().unwrap_or_default(),
                        x["value"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    json!({"id": p["id"], "subject": subject, "roles": roles.join(","), "scope": scope.join(" "),
        "description": p["description"]})
}
