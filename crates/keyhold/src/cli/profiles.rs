//! `keyhold profiles …`: the config file's named connection settings.

use clap::Subcommand;
use serde_json::json;

use super::error::{CliError, CliResult};
use super::output;
use super::profile::{config_path, load_config, save_config, ConnArgs, Output, Profile};

#[derive(Subcommand, Debug)]
pub enum ProfilesCmd {
    /// List the profiles of the config file (API keys are never shown).
    #[command(after_help = "Example:\n  keyhold profiles list")]
    List,
    /// Add or replace a profile from the connection flags given with it.
    #[command(
        after_help = "Examples:\n  keyhold profiles add dev --dev-json keyhold-data/dev.json --default\n  \
keyhold profiles add prod --url https://kms.example:8443 --instance 1234… --apikey-file ~/.kh-key"
    )]
    Add {
        name: String,
        /// Make it the default profile.
        #[arg(long)]
        default: bool,
    },
    /// Remove a profile.
    #[command(after_help = "Example:\n  keyhold profiles remove old")]
    Remove { name: String },
    /// Make a profile the default.
    #[command(after_help = "Example:\n  keyhold profiles use prod")]
    Use { name: String },
}

pub fn run(conn: &ConnArgs, out: Output, cmd: ProfilesCmd) -> CliResult<()> {
    let path = config_path(conn);
    let mut cfg = load_config(&path)?;
    match cmd {
        ProfilesCmd::List => {
            let default = cfg
                .default_profile
                .clone()
                .unwrap_or_else(|| "default".into());
            match out {
                Output::Json => {
                    let list: Vec<_> = cfg
                        .profiles
                        .iter()
                        .map(|(n, p)| json!({"name": n, "default": *n == default, "url": p.url, "instance_id": p.instance_id,
                            "dev_json": p.dev_json, "key_ring": p.key_ring}))
                        .collect();
                    output::json(&list)
                }
                Output::Table => {
                    let rows: Vec<Vec<String>> = cfg
                        .profiles
                        .iter()
                        .map(|(n, p)| {
                            vec![
                                if *n == default {
                                    format!("* {n}")
                                } else {
                                    format!("  {n}")
                                },
                                p.url
                                    .clone()
                                    .or(p
                                        .dev_json
                                        .as_ref()
                                        .map(|d| format!("(dev.json {})", d.display())))
                                    .unwrap_or_default(),
                                p.instance_id.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    output::table(&["  NAME", "URL", "INSTANCE"], &rows);
                    Ok(())
                }
            }
        }
        ProfilesCmd::Add { name, default } => {
            let p = Profile {
                url: conn.url.clone(),
                iam_url: conn.iam_url.clone(),
                instance_id: conn.instance.clone(),
                apikey_file: conn.apikey_file.clone(),
                key_ring: conn.key_ring.clone(),
                // Absolute, so the profile works from any directory.
                dev_json: conn
                    .dev_json
                    .as_ref()
                    .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
                ..Profile::default()
            };
            if p.url.is_none() && p.dev_json.is_none() {
                return Err(CliError::Usage(
                    "a profile needs --url (with --instance and --apikey-file) or --dev-json"
                        .into(),
                ));
            }
            cfg.profiles.insert(name.clone(), p);
            if default {
                cfg.default_profile = Some(name.clone());
            }
            save_config(&path, &cfg)?;
            output::done(
                out,
                &format!("profile {name} saved in {}", path.display()),
                json!({"name": name}),
            )
        }
        ProfilesCmd::Remove { name } => {
            if cfg.profiles.remove(&name).is_none() {
                return Err(CliError::Usage(format!(
                    "no profile {name:?} in {}",
                    path.display()
                )));
            }
            if cfg.default_profile.as_deref() == Some(name.as_str()) {
                cfg.default_profile = None;
            }
            save_config(&path, &cfg)?;
            output::done(
                out,
                &format!("profile {name} removed"),
                json!({"name": name}),
            )
        }
        ProfilesCmd::Use { name } => {
            if !cfg.profiles.contains_key(&name) {
                return Err(CliError::Usage(format!(
                    "no profile {name:?} in {}",
                    path.display()
                )));
            }
            cfg.default_profile = Some(name.clone());
            save_config(&path, &cfg)?;
            output::done(
                out,
                &format!("default profile is now {name}"),
                json!({"name": name}),
            )
        }
    }
}
