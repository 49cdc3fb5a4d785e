//! The library against a real Keyhold dev server started in this process (SQLite and the
//! software crypto unit in a temporary directory, on an ephemeral loopback port): the
//! typed API, secure import, and envelope encryption over `Read`/`Write` and async
//! streams, with and without the DEK cache.

use std::path::PathBuf;
use std::time::Duration;

use keyhold_client::dek_cache::CacheLimits;
use keyhold_client::envelope::{Envelope, EnvelopeError};
use keyhold_client::model::{KeyListQuery, NewKey};
use keyhold_client::stream::Header;
use keyhold_client::{Client, ClientConfig, ClientError};
use serde::Deserialize;
use tokio::sync::OnceCell;

#[derive(Deserialize, Clone)]
struct Dev {
    url: String,
    iam_url: String,
    instance_id: String,
    apikey: String,
    service_apikey: String,
}

static DEV: OnceCell<Dev> = OnceCell::const_new();

/// One server for the whole test binary, on its own runtime thread (each test has its
/// own runtime, which would otherwise take the server down with it).
async fn dev() -> Dev {
    DEV.get_or_init(|| async {
        // Under target/tmp (Cargo keeps it for integration tests), not the system /tmp.
        let dir: PathBuf = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "keyhold-client-live-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let mut cfg = keyhold_server::config::ServerConfig::dev_defaults(dir.clone());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.rules.rotate_min_interval = 0;
        cfg.rules.action_cooldown = 0;
        cfg.rules.purge_delay = 0;
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            if let Err(e) = rt.block_on(keyhold_server::server::serve_dev(cfg)) {
                panic!("dev server: {e}");
            }
        });
        let path = dir.join("dev.json");
        for _ in 0..600 {
            if let Ok(bytes) = std::fs::read(&path) {
                if let Ok(dev) = serde_json::from_slice::<Dev>(&bytes) {
                    if !dev.url.is_empty() {
                        return dev;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the dev server did not write {}", path.display());
    })
    .await
    .clone()
}

async fn client_as(apikey_of: fn(&Dev) -> &str) -> Client {
    let d = dev().await;
    Client::new(ClientConfig::new(
        &d.url,
        &d.iam_url,
        &d.instance_id,
        apikey_of(&d),
    ))
    .unwrap()
}

async fn admin() -> Client {
    client_as(|d| &d.apikey).await
}

fn uniq(p: &str) -> String {
    format!("{p}-{}", uuid::Uuid::new_v4().simple())
}

async fn root_key(c: &Client) -> String {
    let k = c
        .create_key(&NewKey {
            name: uniq("root"),
            ..Default::default()
        })
        .await
        .unwrap();
    k.id
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 256) as u8).collect()
}

#[tokio::test]
async fn typed_api_round_trip() {
    let c = admin().await;
    let alias = uniq("al");
    let k = c
        .create_key(&NewKey {
            name: uniq("k"),
            aliases: vec![alias.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(c.get_key_metadata(&alias).await.unwrap().id, k.id);
    assert!(c.key_total().await.unwrap() >= 1);
    let listed = c
        .list_keys(&KeyListQuery {
            extractable: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(listed.iter().any(|x| x.id == k.id));

    let w = c
        .wrap(
            &k.id,
            Some(b"0123456789abcdef0123456789abcdef"),
            &["a".into()],
        )
        .await
        .unwrap();
    c.rotate(&k.id, None).await.unwrap();
    let u = c.unwrap(&k.id, &w.ciphertext, &["a".into()]).await.unwrap();
    assert!(
        u.rewrapped_key_version.is_some(),
        "old ciphertext comes back rewrapped"
    );
    assert_eq!(c.key_versions(&k.id).await.unwrap().len(), 2);
    let rw = c.rewrap(&k.id, &w.ciphertext, &["a".into()]).await.unwrap();
    assert_eq!(
        &*c.unwrap_bytes(&k.id, &rw.ciphertext, &["a".into()])
            .await
            .unwrap(),
        b"0123456789abcdef0123456789abcdef"
    );

    let e = c
        .unwrap(&k.id, &w.ciphertext, &["b".into()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("UNPROCESSABLE_CIPHERTEXT_ERR"));

    c.set_rotation_policy(&k.id, true, Some(2)).await.unwrap();
    assert!(!c.key_policies(&k.id).await.unwrap().is_empty());
    c.set_instance_policy("metrics", serde_json::json!({"enabled": true}))
        .await
        .unwrap();
    assert!(!c.instance_policies().await.unwrap().is_empty());

    let ring = uniq("ring");
    c.create_key_ring(&ring).await.unwrap();
    assert!(c
        .list_key_rings()
        .await
        .unwrap()
        .iter()
        .any(|r| r.id == ring));
    let moved = c.move_key(&k.id, &ring).await.unwrap();
    assert_eq!(moved.key_ring_id.as_deref(), Some(ring.as_str()));

    let a2 = uniq("al");
    assert_eq!(c.create_alias(&k.id, &a2).await.unwrap().key_id, k.id);
    c.delete_alias(&k.id, &a2).await.unwrap();
    assert!(c.key_registrations(&k.id).await.unwrap().is_empty());
    assert!(c.registrations(None).await.is_ok());

    c.disable_key(&k.id).await.unwrap();
    let e = c.wrap(&k.id, None, &[]).await.unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(409), Some("KEY_ACTION_INVALID_STATE_ERR"))
    );
    c.enable_key(&k.id).await.unwrap();
    c.sync_key(&k.id).await.unwrap();
    let deleted = c.delete_key(&k.id, false).await.unwrap();
    assert_eq!(deleted.state, 5);
    assert_eq!(c.restore_key(&k.id).await.unwrap().state, 1);
    c.delete_key(&k.id, false).await.unwrap();
    c.purge_key(&k.id).await.unwrap();
    let e = c.get_key(&k.id).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
}

#[tokio::test]
async fn secure_import_and_reader_denial() {
    let c = admin().await;
    c.create_import_token(Some(600), Some(3)).await.unwrap();
    let material = [9u8; 32];
    let k = c
        .import_key_secure(
            &NewKey {
                name: uniq("sec"),
                ..Default::default()
            },
            &material,
        )
        .await
        .unwrap();
    assert_eq!(
        k.extra.get("imported"),
        Some(&serde_json::Value::Bool(true))
    );
    let reader = client_as(|d| &d.service_apikey).await;
    let e = reader
        .create_key(&NewKey {
            name: uniq("nope"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    let bad = {
        let d = dev().await;
        Client::new(ClientConfig::new(
            &d.url,
            &d.iam_url,
            &d.instance_id,
            "kh_wrong",
        ))
        .unwrap()
    };
    assert!(matches!(
        bad.key_total().await.unwrap_err(),
        ClientError::Auth { .. }
    ));
}

#[tokio::test]
async fn envelope_sync_and_async_survive_rotation() {
    let c = admin().await;
    let key = root_key(&c).await;
    let env = Envelope::new(c.clone());
    let plain = data(300_000);

    let mut sealed = Vec::new();
    env.encrypt_to(&key, &mut &plain[..], &mut sealed)
        .await
        .unwrap();
    let mut sealed_async = Vec::new();
    env.encrypt_async(&key, &mut &plain[..], &mut sealed_async)
        .await
        .unwrap();
    c.rotate(&key, None).await.unwrap();

    let mut out = Vec::new();
    env.decrypt_to(&mut &sealed[..], &mut out).await.unwrap();
    assert_eq!(out, plain);
    let mut out = Vec::new();
    env.decrypt_async(&mut &sealed_async[..], &mut out)
        .await
        .unwrap();
    assert_eq!(out, plain);

    c.disable_key(&key).await.unwrap();
    let err = env
        .decrypt_to(&mut &sealed[..], &mut Vec::new())
        .await
        .unwrap_err();
    match err {
        EnvelopeError::Kms(e) => assert_eq!(e.code(), Some("KEY_ACTION_INVALID_STATE_ERR")),
        other => panic!("expected a KMS refusal, got {other}"),
    }
}

fn header_of(file: &[u8]) -> Header {
    Header::read_from(&mut &file[..]).unwrap()
}

#[tokio::test]
async fn dek_cache_respects_its_bounds() {
    let c = admin().await;
    let key = root_key(&c).await;
    let env = Envelope::new(c.clone()).with_cache(CacheLimits {
        max_uses: 2,
        max_bytes: 1000,
        ..Default::default()
    });
    let mut files = Vec::new();
    for size in [10, 10, 10] {
        let mut f = Vec::new();
        env.encrypt_to(&key, &mut &data(size)[..], &mut f)
            .await
            .unwrap();
        files.push(f);
    }
    let w: Vec<String> = files.iter().map(|f| header_of(f).wrapped_dek).collect();
    assert_eq!(w[0], w[1], "second file reuses the cached DEK");
    assert_ne!(w[1], w[2], "third use exceeds max_uses: a fresh DEK");
    assert_ne!(
        header_of(&files[0]).nonce_prefix,
        header_of(&files[1]).nonce_prefix
    );

    // The byte bound: one large file retires the DEK.
    let mut big = Vec::new();
    env.encrypt_to(&key, &mut &data(5000)[..], &mut big)
        .await
        .unwrap();
    let mut next = Vec::new();
    env.encrypt_to(&key, &mut &data(10)[..], &mut next)
        .await
        .unwrap();
    assert_ne!(header_of(&big).wrapped_dek, header_of(&next).wrapped_dek);

    // Decryption cache: a cached DEK keeps working after the key is disabled (within
    // max_age), an uncached one does not.
    let mut out = Vec::new();
    env.decrypt_to(&mut &files[0][..], &mut out).await.unwrap();
    c.disable_key(&key).await.unwrap();
    let mut again = Vec::new();
    env.decrypt_to(&mut &files[0][..], &mut again)
        .await
        .unwrap();
    assert_eq!(out, again);
    let fresh = Envelope::new(c.clone());
    assert!(fresh
        .decrypt_to(&mut &files[0][..], &mut Vec::new())
        .await
        .is_err());
}

#[tokio::test]
async fn overrides_registrations_and_allowed_ip_port() {
    use keyhold_client::admin::RegistrationInput;
    let c = admin().await;
    let k = c
        .create_key_with_overrides(
            &NewKey {
                name: uniq("ovr"),
                ..Default::default()
            },
            Some(5),
            Some(false),
        )
        .await
        .unwrap();
    let pols = c.key_policies(&k.id).await.unwrap();
    assert!(
        pols.iter().any(|p| p["rotation"]["interval_month"] == 5),
        "{pols:?}"
    );

    let svc = client_as(|d| &d.service_apikey).await;
    let crn = format!(
        "crn:v1:bluemix:public:cloud-object-storage:global:a/acct:inst:bucket:{}",
        uniq("b")
    );
    let input = RegistrationInput {
        description: Some("bucket".into()),
        prevent_key_deletion: Some(true),
        ..Default::default()
    };
    svc.create_registration(&k.id, &crn, &input).await.unwrap();
    let regs = c.key_registrations(&k.id).await.unwrap();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0]["resourceCrn"], crn.as_str());
    let e = c.delete_key(&k.id, true).await.unwrap_err();
    assert_eq!(e.code(), Some("PREV_KEY_DEL_ERR"));
    let input = RegistrationInput {
        prevent_key_deletion: Some(false),
        ..Default::default()
    };
    svc.update_registration(&k.id, &crn, &input).await.unwrap();
    svc.delete_registration(&k.id, &crn).await.unwrap();
    assert!(c.key_registrations(&k.id).await.unwrap().is_empty());
    // The admin is not a service: service-to-service calls are refused.
    assert!(c
        .create_registration(&k.id, &crn, &RegistrationInput::default())
        .await
        .is_err());

    assert!(
        c.allowed_ip_port().await.unwrap().is_empty(),
        "no allowedIP policy, no port"
    );
}
