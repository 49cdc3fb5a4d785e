//! Where to connect and as whom: command-line flags, then environment variables, then a
//! dev server's `dev.json` (`--dev-json` replaces the profile), then a profile from the config file
//! (`~/.config/keyhold/config.toml`, or `--config` / `KEYHOLD_CONFIG`).
//!
//! ```toml
//! default_profile = "dev"
//! [profiles.dev]
//! url = "http://127.0.0.1:8080"
//! iam_url = "http://127.0.0.1:8080"   # defaults to url
//! instance_id = "…"
//! apikey_file = "/home/me/.keyhold-apikey"   # or apikey = "…", or apikey_env = "VAR"
//! key_ring = "default"                      # optional
//! # dev_json = "keyhold-data/dev.json"      # or take all of the above from a dev server
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use keyhold_client::ClientConfig;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::{CliError, CliResult};

#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Config file with profiles [default: ~/.config/keyhold/config.toml].
    #[arg(long, global = true, env = "KEYHOLD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Profile of the config file to use [default: its default_profile, else "default"].
    #[arg(long, short = 'p', global = true, env = "KEYHOLD_PROFILE")]
    pub profile: Option<String>,
    /// Take url, iam_url, instance id and the admin API key from a dev server's dev.json.
    #[arg(long, global = true, env = "KEYHOLD_DEV_JSON", value_name = "PATH")]
    pub dev_json: Option<PathBuf>,
    /// Service URL, e.g. http://127.0.0.1:8080.
    #[arg(long, global = true, env = "KEYHOLD_URL")]
    pub url: Option<String>,
    /// IAM token service URL [default: the service URL].
    #[arg(long, global = true, env = "KEYHOLD_IAM_URL")]
    pub iam_url: Option<String>,
    /// Key-management instance id (Bluemix-Instance).
    #[arg(long, global = true, env = "KEYHOLD_INSTANCE")]
    pub instance: Option<String>,
    /// File holding the API key (the key itself may be given in KEYHOLD_APIKEY; never
    /// on the command line, where other users could read it).
    #[arg(long, global = true, value_name = "PATH")]
    pub apikey_file: Option<PathBuf>,
    /// Key ring sent as X-Kms-Key-Ring (new keys go there; lists are filtered to it).
    #[arg(long, global = true, env = "KEYHOLD_KEY_RING")]
    pub key_ring: Option<String>,
    /// Output format.
    #[arg(
        long,
        short = 'o',
        global = true,
        env = "KEYHOLD_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: Output,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apikey: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apikey_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apikey_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ring: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_json: Option<PathBuf>,
}

#[derive(Deserialize)]
struct DevJson {
    url: String,
    #[serde(default)]
    iam_url: Option<String>,
    instance_id: String,
    apikey: String,
}

pub fn config_path(args: &ConnArgs) -> PathBuf {
    if let Some(p) = &args.config {
        return p.clone();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("keyhold").join("config.toml")
}

pub fn load_config(path: &Path) -> CliResult<ConfigFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| CliError::Usage(format!("config file {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(CliError::Local(format!(
            "config file {}: {e}",
            path.display()
        ))),
    }
}

pub fn save_config(path: &Path, cfg: &ConfigFile) -> CliResult<()> {
    let text = toml::to_string_pretty(cfg).map_err(|e| CliError::Local(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private(path, text.as_bytes())
}

/// Writes a file only its owner may read (it may hold an API key).
fn write_private(path: &Path, bytes: &[u8]) -> CliResult<()> {
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

fn read_dev_json(path: &Path) -> CliResult<DevJson> {
    let text = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("--dev-json {}: {e}", path.display())))?;
    serde_json::from_slice(&text)
        .map_err(|e| CliError::Usage(format!("--dev-json {}: {e}", path.display())))
}

fn read_key_file(path: &Path) -> CliResult<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("API key file {}: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

/// Resolves the connection settings; see the module comment for the order.
pub fn resolve(args: &ConnArgs) -> CliResult<ClientConfig> {
    resolve_with(args, true)
}

/// [`resolve`] for account-level commands (`login`, `iam`, `instances`,
/// `authorizations`), which need no key-management instance.
pub fn resolve_account(args: &ConnArgs) -> CliResult<ClientConfig> {
    resolve_with(args, false)
}

fn resolve_with(args: &ConnArgs, need_instance: bool) -> CliResult<ClientConfig> {
    let path = config_path(args);
    let file = load_config(&path)?;
    let name = args
        .profile
        .clone()
        .or(file.default_profile.clone())
        .unwrap_or_else(|| "default".into());
    // An explicit --dev-json names the whole connection: a profile's API key must not
    // be mixed into it.
    let mut profile = match &args.dev_json {
        Some(_) => Profile::default(),
        None => file.profiles.get(&name).cloned().unwrap_or_default(),
    };
    if args.profile.is_some() && !file.profiles.contains_key(&name) {
        return Err(CliError::Usage(format!(
            "no profile {name:?} in {} (see `keyhold profiles list`)",
            path.display()
        )));
    }
    let dev_path = args.dev_json.clone().or(profile.dev_json.clone());
    let mut apikey: Option<Zeroizing<String>> = None;
    if let Some(p) = dev_path {
        let dev = read_dev_json(&p)?;
        profile.iam_url = dev.iam_url.or(Some(dev.url.clone()));
        profile.url = Some(dev.url);
        profile.instance_id = Some(dev.instance_id);
        apikey = Some(Zeroizing::new(dev.apikey));
    }
    if let Some(k) = &profile.apikey {
        apikey = Some(Zeroizing::new(k.clone()));
    }
    if let Some(f) = &profile.apikey_file {
        apikey = Some(Zeroizing::new(read_key_file(f)?));
    }
    if let Some(var) = &profile.apikey_env {
        if let Ok(v) = std::env::var(var) {
            apikey = Some(Zeroizing::new(v));
        }
    }
    if let Ok(v) = std::env::var("KEYHOLD_APIKEY") {
        if !v.is_empty() {
            apikey = Some(Zeroizing::new(v));
        }
    }
    if let Some(f) = &args.apikey_file {
        apikey = Some(Zeroizing::new(read_key_file(f)?));
    }
    let url = args.url.clone().or(profile.url.clone()).ok_or_else(|| {
        CliError::Usage(
            "no service URL: give --url, --dev-json, or a profile in the config file (`keyhold profiles add`)".into(),
        )
    })?;
    let iam_url = args
        .iam_url
        .clone()
        .or(profile.iam_url.clone())
        .unwrap_or_else(|| url.clone());
    let instance = match args.instance.clone().or(profile.instance_id.clone()) {
        Some(i) => i,
        None if !need_instance => String::new(),
        None => {
            return Err(CliError::Usage(
                "no instance id: give --instance or set instance_id in the profile".into(),
            ))
        }
    };
    let apikey = apikey.ok_or_else(|| {
        CliError::Usage(
            "no API key: set KEYHOLD_APIKEY, --apikey-file, or apikey_file in the profile".into(),
        )
    })?;
    let mut cfg = ClientConfig::new(&url, &iam_url, &instance, &apikey);
    cfg.key_ring = args.key_ring.clone().or(profile.key_ring);
    Ok(cfg)
}
