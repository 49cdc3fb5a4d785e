//! Command-line arguments of `keyhold bench` and their checking into a [`Plan`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// What is under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// A Keyhold (or Key Protect v2) server.
    Keyhold,
    /// An OpenBao (or Vault) server with the transit engine.
    Openbao,
    /// `GET /health` of a Keyhold server: the HTTP stack with no work behind it.
    Baseline,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Keyhold => "keyhold",
            Target::Openbao => "openbao",
            Target::Baseline => "baseline",
        }
    }
}

/// The request each connection sends over and over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mix {
    /// Keyhold: wrap a DEK under a root key.
    Wrap,
    /// Keyhold: unwrap a ciphertext made in set-up.
    Unwrap,
    /// Keyhold: wrap and unwrap, alternating.
    WrapUnwrap,
    /// Keyhold: create a root key (a durable write).
    Create,
    /// Keyhold: get a key's metadata.
    Get,
    /// Keyhold: list keys (limit=20).
    List,
    /// OpenBao: transit encrypt.
    Encrypt,
    /// OpenBao: transit decrypt of a ciphertext made in set-up.
    Decrypt,
    /// OpenBao: transit datakey/plaintext (generate and wrap a DEK).
    Datakey,
    /// Baseline: GET /health.
    Health,
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Wrap => "wrap",
            Mix::Unwrap => "unwrap",
            Mix::WrapUnwrap => "wrap-unwrap",
            Mix::Create => "create",
            Mix::Get => "get",
            Mix::List => "list",
            Mix::Encrypt => "encrypt",
            Mix::Decrypt => "decrypt",
            Mix::Datakey => "datakey",
            Mix::Health => "health",
        }
    }

    fn target(self) -> Target {
        match self {
            Mix::Wrap | Mix::Unwrap | Mix::WrapUnwrap | Mix::Create | Mix::Get | Mix::List => {
                Target::Keyhold
            }
            Mix::Encrypt | Mix::Decrypt | Mix::Datakey => Target::Openbao,
            Mix::Health => Target::Baseline,
        }
    }
}

pub const AFTER_HELP: &str = "\
Every connection is its own keep-alive HTTP/1.1 connection driven by its own task. Set-up
(token, root keys, the ciphertext that unwrap/decrypt replay, the transit key) happens before
the clock starts; the warm-up is then run and thrown away. Latencies are those of the 2xx
answers, measured from the moment a request was due (so with --rate a server that falls behind
is charged for the queueing). Any non-2xx answer or transport failure is an error: it is
counted per status, printed, and makes the exit status 1.

Examples:
  # Keyhold wrap for 10 s over 16 connections, credentials from a dev server's dev.json
  keyhold bench --dev-json keyhold-data/dev.json --mix wrap --duration 10s

  # unwrap spread over 8 root keys, 64-byte DEKs, JSON output
  keyhold bench --dev-json keyhold-data/dev.json --mix unwrap --keys 8 --dek-bytes 64 --json

  # 100,000 key creations
  keyhold bench --dev-json keyhold-data/dev.json --mix create --requests 100000

  # latency at a fixed 5,000 wraps/s (open loop)
  keyhold bench --dev-json keyhold-data/dev.json --mix wrap --rate 5000 --duration 20s

  # explicit credentials instead of dev.json
  keyhold bench --url http://127.0.0.1:8080 --apikey KEY --instance INSTANCE_ID --mix get

  # the HTTP stack alone
  keyhold bench --target baseline --url http://127.0.0.1:8080

  # OpenBao transit, creating the aes256-gcm96 key 'bench' first
  keyhold bench --target openbao --url http://127.0.0.1:8200 --bao-token s.xxx \\
      --bao-key bench --bao-create-key --mix decrypt";

/// Arguments of `keyhold bench`.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// What to load: keyhold (Key Protect API), openbao (transit engine) or baseline (GET /health).
    #[arg(long, value_enum, default_value_t = Target::Keyhold)]
    pub target: Target,

    /// Base URL of the server (http:// only). Keyhold and baseline take it from --dev-json when
    /// absent; OpenBao defaults to http://127.0.0.1:8200.
    #[arg(long)]
    pub url: Option<String>,

    /// Keep-alive HTTP/1.1 connections, one task each.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,

    /// The request to repeat. keyhold: wrap, unwrap, wrap-unwrap (alternating), create, get,
    /// list; openbao: encrypt, decrypt, datakey; baseline: health. Default: wrap, encrypt or
    /// health by target.
    #[arg(long, value_enum)]
    pub mix: Option<Mix>,

    /// How long to measure, after the warm-up (e.g. 10s, 500ms, 2m; a bare number is seconds).
    /// Default 10s.
    #[arg(long, short = 'd', value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,

    /// Measure this many requests instead of a fixed time.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Size of the data encryption key that is wrapped or encrypted, in bytes (datakey: 16, 32
    /// or 64).
    #[arg(long, default_value_t = 32, value_name = "BYTES")]
    pub dek_bytes: usize,

    /// Spread keyhold wrap/unwrap/get over this many root keys, created in set-up.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub keys: usize,

    /// Use the first --keys active root keys the instance already has (in id order) instead
    /// of creating them, e.g. over a store seeded with `--mix create --requests N`.
    #[arg(long)]
    pub existing_keys: bool,

    /// Open loop: send this many requests per second in total, spread evenly over the
    /// connections, whatever the answers' speed (for latency at a given load). Default: closed
    /// loop, each connection sends its next request when the last one is answered.
    #[arg(long, value_name = "REQ_PER_SEC")]
    pub rate: Option<f64>,

    /// Load sent before measuring starts, not counted.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,

    /// Keyhold: API key to exchange for an access token at --iam-url.
    #[arg(long)]
    pub apikey: Option<String>,

    /// Keyhold: IAM token endpoint base URL (POST {iam-url}/identity/token). Default: --url.
    #[arg(long)]
    pub iam_url: Option<String>,

    /// Keyhold: an access token to use as is (instead of --apikey).
    #[arg(long)]
    pub token: Option<String>,

    /// Keyhold: the Bluemix-Instance header (key-management instance id).
    #[arg(long)]
    pub instance: Option<String>,

    /// Keyhold/baseline: read url, iam_url, apikey and instance_id from a `serve --dev` dev.json
    /// (explicit flags win).
    #[arg(long, value_name = "PATH")]
    pub dev_json: Option<PathBuf>,

    /// OpenBao: token sent as X-Vault-Token.
    #[arg(long, env = "BAO_TOKEN", hide_env_values = true)]
    pub bao_token: Option<String>,

    /// OpenBao: name of the transit key.
    #[arg(long, default_value = "bench")]
    pub bao_key: String,

    /// OpenBao: create the transit key (type aes256-gcm96) in set-up if it does not exist.
    #[arg(long)]
    pub bao_create_key: bool,

    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    After(Duration),
    Requests(u64),
}

/// Keyhold credentials as given.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Token(String),
    ApiKey { iam_url: String, apikey: String },
}

/// Checked arguments: everything a run needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub target: Target,
    pub mix: Mix,
    pub url: Endpoint,
    pub connections: usize,
    pub stop: Stop,
    pub dek_bytes: usize,
    pub keys: usize,
    pub existing_keys: bool,
    pub rate: Option<f64>,
    pub warmup: Duration,
    /// Keyhold only.
    pub auth: Option<Auth>,
    /// Keyhold only.
    pub instance: Option<String>,
    /// OpenBao only.
    pub bao_token: Option<String>,
    pub bao_key: String,
    pub bao_create_key: bool,
    pub json: bool,
    pub quiet: bool,
}

/// A plain-HTTP server address.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// host:port to connect to.
    pub authority: String,
    /// Path prefix, without a trailing slash ("" for none).
    pub prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                format!(
                    "{url}: only http:// is supported (run the benchmark on loopback without TLS)"
                )
            } else {
                format!("{url}: not an http:// URL")
            }
        })?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let authority = if host.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && !host.ends_with(']')
        }) {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        Ok(Endpoint {
            authority,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

/// Parses "10s", "500ms", "2m", "1h", "1.5s" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 10s, 500ms or 2m"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s, m or h)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?}: not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Debug, Default, serde::Deserialize)]
struct DevJson {
    url: Option<String>,
    iam_url: Option<String>,
    apikey: Option<String>,
    instance_id: Option<String>,
}

impl BenchArgs {
    /// Checks the arguments (reading --dev-json if given) and fills in the defaults.
    pub fn plan(&self) -> Result<Plan, String> {
        let mix = self.mix.unwrap_or(match self.target {
            Target::Keyhold => Mix::Wrap,
            Target::Openbao => Mix::Encrypt,
            Target::Baseline => Mix::Health,
        });
        if mix.target() != self.target {
            return Err(format!(
                "--mix {} is not a {} workload (keyhold: wrap, unwrap, wrap-unwrap, create, get, list; \
openbao: encrypt, decrypt, datakey; baseline: health)",
                mix.name(),
                self.target.name()
            ));
        }
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if self.dek_bytes == 0 {
            return Err("--dek-bytes must be at least 1".into());
        }
        if mix == Mix::Datakey && ![16, 32, 64].contains(&self.dek_bytes) {
            return Err(
                "--mix datakey needs --dek-bytes 16, 32 or 64 (128, 256 or 512 bits)".into(),
            );
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err("--rate must be a positive number of requests per second".into());
            }
        }
        let stop = match (self.requests, self.duration) {
            (Some(0), _) => return Err("--requests must be at least 1".into()),
            (Some(n), _) => Stop::Requests(n),
            (None, Some(d)) if d.is_zero() => return Err("--duration must be positive".into()),
            (None, Some(d)) => Stop::After(d),
            (None, None) => Stop::After(Duration::from_secs(10)),
        };

        let dev = match (&self.dev_json, self.target) {
            (Some(path), Target::Keyhold | Target::Baseline) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--dev-json {}: {e}", path.display()))?;
                serde_json::from_str::<DevJson>(&text)
                    .map_err(|e| format!("--dev-json {}: {e}", path.display()))?
            }
            (Some(_), Target::Openbao) => {
                return Err("--dev-json describes a Keyhold server, not OpenBao".into())
            }
            (None, _) => DevJson::default(),
        };

        let url = match (self.url.clone().or(dev.url.clone()), self.target) {
            (Some(u), _) => u,
            (None, Target::Openbao) => "http://127.0.0.1:8200".to_string(),
            (None, _) => return Err("give --url or --dev-json".into()),
        };
        let endpoint = Endpoint::parse(&url)?;

        let (auth, instance, bao_token) = match self.target {
            Target::Keyhold => {
                let auth = if let Some(t) = &self.token {
                    Auth::Token(t.clone())
                } else if let Some(k) = self.apikey.clone().or(dev.apikey) {
                    let iam = self
                        .iam_url
                        .clone()
                        .or(dev.iam_url)
                        .unwrap_or_else(|| url.clone());
                    Endpoint::parse(&iam).map_err(|e| format!("--iam-url {e}"))?;
                    Auth::ApiKey {
                        iam_url: iam,
                        apikey: k,
                    }
                } else {
                    return Err("keyhold needs --token, --apikey or --dev-json".into());
                };
                let instance = self
                    .instance
                    .clone()
                    .or(dev.instance_id)
                    .ok_or("keyhold needs --instance (or --dev-json)")?;
                (Some(auth), Some(instance), None)
            }
            Target::Openbao => {
                let t = self
                    .bao_token
                    .clone()
                    .ok_or("openbao needs --bao-token (or BAO_TOKEN)")?;
                (None, None, Some(t))
            }
            Target::Baseline => (None, None, None),
        };

        Ok(Plan {
            target: self.target,
            mix,
            url: endpoint,
            connections: self.connections,
            stop,
            dek_bytes: self.dek_bytes,
            keys: self.keys,
            existing_keys: self.existing_keys,
            rate: self.rate,
            warmup: self.warmup,
            auth,
            instance,
            bao_token,
            bao_key: self.bao_key.clone(),
            bao_create_key: self.bao_create_key,
            json: self.json,
            quiet: self.quiet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut full = vec!["bench"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).map(|c| c.args)
    }

    fn plan(argv: &[&str]) -> Result<Plan, String> {
        parse(argv).map_err(|e| e.to_string())?.plan()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(e.authority, "127.0.0.1:8080");
        assert_eq!(e.prefix, "");
        let e = Endpoint::parse("http://localhost/kms/").unwrap();
        assert_eq!(e.authority, "localhost:80");
        assert_eq!(e.prefix, "/kms");
        let e = Endpoint::parse("http://[::1]:9000/").unwrap();
        assert_eq!(e.authority, "[::1]:9000");
        assert!(Endpoint::parse("https://127.0.0.1:8080")
            .unwrap_err()
            .contains("only http://"));
        assert!(Endpoint::parse("127.0.0.1:8080").is_err());
        assert!(Endpoint::parse("http:///x").is_err());
    }

    #[test]
    fn defaults() {
        let p = plan(&[
            "--url",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--instance",
            "i",
        ])
        .unwrap();
        assert_eq!(p.target, Target::Keyhold);
        assert_eq!(p.mix, Mix::Wrap);
        assert_eq!(p.connections, 16);
        assert_eq!(p.dek_bytes, 32);
        assert_eq!(p.keys, 1);
        assert_eq!(p.stop, Stop::After(Duration::from_secs(10)));
        assert_eq!(p.warmup, Duration::from_secs(2));
        assert_eq!(p.rate, None);
        assert_eq!(p.auth, Some(Auth::Token("t".into())));
        assert_eq!(p.instance.as_deref(), Some("i"));
        assert!(!p.json && !p.quiet);
    }

    #[test]
    fn every_flag() {
        let p = plan(&[
            "--url",
            "http://127.0.0.1:9/",
            "--apikey",
            "k",
            "--iam-url",
            "http://127.0.0.1:10",
            "--instance",
            "inst",
            "--mix",
            "wrap-unwrap",
            "-c",
            "4",
            "--requests",
            "1000",
            "--dek-bytes",
            "64",
            "--keys",
            "8",
            "--rate",
            "2500.5",
            "--warmup",
            "0s",
            "--json",
            "--quiet",
        ])
        .unwrap();
        assert_eq!(p.mix, Mix::WrapUnwrap);
        assert_eq!(p.connections, 4);
        assert_eq!(p.stop, Stop::Requests(1000));
        assert_eq!(p.dek_bytes, 64);
        assert_eq!(p.keys, 8);
        assert_eq!(p.rate, Some(2500.5));
        assert_eq!(p.warmup, Duration::ZERO);
        assert_eq!(
            p.auth,
            Some(Auth::ApiKey {
                iam_url: "http://127.0.0.1:10".into(),
                apikey: "k".into()
            })
        );
        assert!(p.json && p.quiet);
    }

    #[test]
    fn duration_and_requests_conflict() {
        assert!(parse(&["--duration", "5s", "--requests", "10"]).is_err());
        assert!(parse(&["--duration", "soon"]).is_err());
    }

    #[test]
    fn mixes_belong_to_their_target() {
        let base = [
            "--url",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--instance",
            "i",
        ];
        for m in ["wrap", "unwrap", "wrap-unwrap", "create", "get", "list"] {
            let mut a = base.to_vec();
            a.extend(["--mix", m]);
            assert_eq!(plan(&a).unwrap().mix.name(), m);
        }
        let mut a = base.to_vec();
        a.extend(["--mix", "encrypt"]);
        assert!(plan(&a).unwrap_err().contains("not a keyhold workload"));
        assert!(plan(&[
            "--target",
            "baseline",
            "--url",
            "http://x:1",
            "--mix",
            "wrap"
        ])
        .is_err());
        let p = plan(&["--target", "baseline", "--url", "http://x:1"]).unwrap();
        assert_eq!(p.mix, Mix::Health);
        assert!(parse(&["--mix", "bogus"]).is_err());
    }

    #[test]
    fn openbao() {
        let p = plan(&[
            "--target",
            "openbao",
            "--bao-token",
            "s.x",
            "--mix",
            "datakey",
        ])
        .unwrap();
        assert_eq!(p.url.authority, "127.0.0.1:8200");
        assert_eq!(p.bao_token.as_deref(), Some("s.x"));
        assert_eq!(p.bao_key, "bench");
        assert_eq!(p.auth, None);
        assert!(plan(&[
            "--target",
            "openbao",
            "--bao-token",
            "s",
            "--mix",
            "datakey",
            "--dek-bytes",
            "24"
        ])
        .unwrap_err()
        .contains("16, 32 or 64"));
        let p = plan(&[
            "--target",
            "openbao",
            "--bao-token",
            "s",
            "--bao-key",
            "k2",
            "--bao-create-key",
        ])
        .unwrap();
        assert_eq!(p.mix, Mix::Encrypt);
        assert_eq!(p.bao_key, "k2");
        assert!(p.bao_create_key);
    }

    #[test]
    fn invalid_values() {
        let base = [
            "--url",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--instance",
            "i",
        ];
        for extra in [
            &["--connections", "0"][..],
            &["--keys", "0"],
            &["--dek-bytes", "0"],
            &["--rate", "0"],
            &["--rate", "-5"],
            &["--requests", "0"],
            &["--duration", "0s"],
        ] {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            assert!(plan(&a).is_err(), "{extra:?} accepted");
        }
        // keyhold without credentials, or without an instance
        assert!(plan(&["--url", "http://127.0.0.1:1"]).is_err());
        assert!(plan(&["--url", "http://127.0.0.1:1", "--token", "t"]).is_err());
        // no url at all
        assert!(plan(&["--token", "t", "--instance", "i"]).is_err());
    }

    #[test]
    fn dev_json_fills_in_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("kh-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dev.json");
        std::fs::write(
            &path,
            r#"{"url":"http://127.0.0.1:4000","iam_url":"http://127.0.0.1:4001","apikey":"ak",
                "instance_id":"inst-1","second_apikey":"x","service_apikey":"y"}"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let plan1 = plan(&["--dev-json", p]).unwrap();
        assert_eq!(plan1.url.authority, "127.0.0.1:4000");
        assert_eq!(plan1.instance.as_deref(), Some("inst-1"));
        assert_eq!(
            plan1.auth,
            Some(Auth::ApiKey {
                iam_url: "http://127.0.0.1:4001".into(),
                apikey: "ak".into()
            })
        );
        let plan2 = plan(&[
            "--dev-json",
            p,
            "--url",
            "http://127.0.0.1:5000",
            "--instance",
            "other",
            "--token",
            "tk",
        ])
        .unwrap();
        assert_eq!(plan2.url.authority, "127.0.0.1:5000");
        assert_eq!(plan2.instance.as_deref(), Some("other"));
        assert_eq!(plan2.auth, Some(Auth::Token("tk".into())));
        let plan3 = plan(&["--target", "baseline", "--dev-json", p]).unwrap();
        assert_eq!(plan3.url.authority, "127.0.0.1:4000");
        assert!(plan(&["--dev-json", "/nonexistent/dev.json"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
