//! The ceremony service over a real (in-memory SQLite) store: quorum across two
//! nodes sharing the store, commit/activate, restart sealed, unseal, refusals.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keyhold_ceremony::admin::{AdminKeyFile, AdminSigner, SigAlg};
use keyhold_ceremony::command::{Command, Verb};
use keyhold_ceremony::transport;
use keyhold_ceremony::KdfParams;
use keyhold_core::Reason;
use keyhold_crypto::{Binding, CryptoError, CryptoUnit, Purpose, SealableUnit};
use keyhold_store::{SqliteStore, Store};

use super::{Ceremony, Outcome, Submission};

const FAST: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 1,
    p: 1,
};

fn node(store: &Arc<dyn Store>) -> (Ceremony, Arc<SealableUnit>) {
    let unit = Arc::new(SealableUnit::sealed(8));
    let c = Ceremony::open(store.clone(), unit.clone(), "ci", "acct").unwrap();
    (c, unit)
}

fn admin(name: &str) -> (AdminKeyFile, AdminSigner) {
    let f = AdminKeyFile::generate(name, SigAlg::Ed25519, b"pw", FAST).unwrap();
    let s = f.unlock(b"pw").unwrap();
    (f, s)
}

fn seq(c: &Ceremony) -> u64 {
    c.status().unwrap()["sequence"].as_u64().unwrap()
}

fn signed(c: &Ceremony, cmd: Command, s: &AdminSigner) -> keyhold_core::Result<Outcome> {
    let sig = s.sign(&cmd.canonical()).unwrap();
    c.submit(Submission {
        command: cmd,
        admin: s.name.clone(),
        signature: STANDARD.encode(sig),
    })
}

fn part_cmd(c: &Ceremony, s: &AdminSigner, register: &str, part: [u8; 32]) -> Command {
    let st = c.status().unwrap();
    let tk = &st["transport_key"];
    let id = tk["id"].as_str().unwrap();
    let public = STANDARD.decode(tk["public_key"].as_str().unwrap()).unwrap();
    let ctx = transport::context("ci", id, &s.name, register);
    let (eph, ct) = transport::seal(&public, &ctx, &part).unwrap();
    Command::new("ci", 0, Verb::LoadPart)
        .with("register", register)
        .with("transport_key_id", id)
        .with("ephemeral_public", STANDARD.encode(eph))
        .with("ciphertext", STANDARD.encode(ct))
        .with("parts", "2")
}

fn binding() -> Binding<'static> {
    Binding {
        purpose: Purpose::RootKey,
        instance_id: "i",
        object_id: "k",
        version_id: "v",
    }
}

#[test]
fn ceremony_across_two_nodes_then_restart_and_unseal() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let (n1, unit1) = node(&store);
    let (n2, _unit2) = node(&store);
    let (fa, a) = admin("alice");
    let (fb, b) = admin("bob");
    let (fc, c) = admin("carol");
    for (f, s) in [(&fa, &a), (&fb, &b), (&fc, &c)] {
        let cmd = Command::new("ci", seq(&n1), Verb::AddAdmin)
            .with("name", f.name.as_str())
            .with("algorithm", f.algorithm.as_str())
            .with("public_key", f.public_key.as_str());
        assert!(matches!(
            signed(&n1, cmd, s).unwrap(),
            Outcome::Executed { .. }
        ));
    }
    let t = Command::new("ci", seq(&n1), Verb::SetThresholds)
        .with("signature", "2")
        .with("revocation", "2");
    signed(&n1, t, &a).unwrap();
    signed(&n2, Command::new("ci", seq(&n2), Verb::ExitImprint), &b).unwrap();

    // Quorum across nodes: alice signs on node 1, bob on node 2.
    let t = Command::new("ci", seq(&n1), Verb::SetThresholds)
        .with("signature", "2")
        .with("revocation", "3");
    assert!(matches!(
        signed(&n1, t.clone(), &a).unwrap(),
        Outcome::Pending(_)
    ));
    assert!(matches!(
        signed(&n2, t.clone(), &b).unwrap(),
        Outcome::Executed { .. }
    ));
    assert_eq!(n1.status().unwrap()["revocation_threshold"], 3);
    // Replaying it is stale.
    let e = signed(&n1, t, &c).unwrap_err();
    assert_eq!(e.reason, Reason::CeremonyStale);

    // Parts go to node 1's register; commit and activate there.
    let (p1, p2) = ([1u8; 32], [2u8; 32]);
    signed(&n1, part_cmd(&n1, &a, "new", p1), &a).unwrap();
    // A part sealed to node 2's transport key does not open on node 1.
    let e = signed(&n1, part_cmd(&n2, &b, "new", p2), &b).unwrap_err();
    assert_eq!(e.reason, Reason::CeremonyStale);
    signed(&n1, part_cmd(&n1, &b, "new", p2), &b).unwrap();
    let vp = n1.status().unwrap()["registers"]["new"]["verification_pattern"]
        .as_str()
        .unwrap()
        .to_string();
    let commit =
        Command::new("ci", seq(&n1), Verb::Commit).with("verification_pattern", vp.as_str());
    signed(&n1, commit.clone(), &a).unwrap();
    signed(&n1, commit, &c).unwrap();
    let activate =
        Command::new("ci", seq(&n1), Verb::Activate).with("verification_pattern", vp.as_str());
    signed(&n1, activate.clone(), &a).unwrap();
    assert_eq!(
        unit1.generate_wrapped(&binding(), 32).unwrap_err(),
        CryptoError::Sealed
    );
    signed(&n1, activate, &c).unwrap();
    let blob = unit1.generate_wrapped(&binding(), 32).unwrap();
    assert!(!n1
        .status()
        .unwrap()
        .to_string()
        .contains(&STANDARD.encode(p1)));

    // A restart: a new node over the same store starts sealed.
    let (n3, unit3) = node(&store);
    assert_eq!(n3.status().unwrap()["sealed"], true);
    signed(&n3, part_cmd(&n3, &a, "unseal", p1), &a).unwrap();
    let e = signed(&n3, part_cmd(&n3, &b, "unseal", [9u8; 32]), &b).unwrap_err();
    assert_eq!(e.reason, Reason::KeyPartMismatch);
    assert!(unit3.is_sealed());
    // Bob's part but signed by carol: the signature names carol, the seal names bob.
    let mut forged = part_cmd(&n3, &b, "unseal", p2);
    forged.args.insert("parts".into(), "2".into());
    let sig = c.sign(&forged.canonical()).unwrap();
    let e = n3
        .submit(Submission {
            command: forged,
            admin: "bob".into(),
            signature: STANDARD.encode(sig),
        })
        .unwrap_err();
    assert_eq!(e.reason, Reason::CeremonySignature);
    assert!(matches!(
        signed(&n3, part_cmd(&n3, &b, "unseal", p2), &b).unwrap(),
        Outcome::Unsealed { .. }
    ));
    // The same master key: node 1's blob opens on the unsealed node 3.
    unit3
        .encrypt_dek(&binding(), &blob, &[0; 12], b"", b"dek")
        .unwrap();
}

/// Three administrators (threshold 2) and a first key from parts `p1`, `p2`
/// loaded by alice and bob on `n`, activated.
fn with_first_key(n: &Ceremony, p1: [u8; 32], p2: [u8; 32]) -> [AdminSigner; 3] {
    let (fa, a) = admin("alice");
    let (fb, b) = admin("bob");
    let (fc, c) = admin("carol");
    for (f, s) in [(&fa, &a), (&fb, &b), (&fc, &c)] {
        let cmd = Command::new("ci", seq(n), Verb::AddAdmin)
            .with("name", f.name.as_str())
            .with("algorithm", f.algorithm.as_str())
            .with("public_key", f.public_key.as_str());
        signed(n, cmd, s).unwrap();
    }
    let t = Command::new("ci", seq(n), Verb::SetThresholds)
        .with("signature", "2")
        .with("revocation", "2");
    signed(n, t, &a).unwrap();
    signed(n, Command::new("ci", seq(n), Verb::ExitImprint), &a).unwrap();
    load_commit_activate(n, [(&a, p1), (&b, p2)], [&a, &c]);
    [a, b, c]
}

fn load_commit_activate(
    n: &Ceremony,
    parts: [(&AdminSigner, [u8; 32]); 2],
    quorum: [&AdminSigner; 2],
) {
    for (s, p) in parts {
        signed(n, part_cmd(n, s, "new", p), s).unwrap();
    }
    let vp = n.status().unwrap()["registers"]["new"]["verification_pattern"]
        .as_str()
        .unwrap()
        .to_string();
    for verb in [Verb::Commit, Verb::Activate] {
        let cmd = Command::new("ci", seq(n), verb).with("verification_pattern", vp.as_str());
        for s in quorum {
            signed(n, cmd.clone(), s).unwrap();
        }
    }
}

fn token_binding(token_id: &str) -> Binding<'_> {
    Binding {
        purpose: Purpose::ImportTokenKey,
        instance_id: "inst",
        object_id: token_id,
        version_id: "1",
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn rotation_rewraps_stored_blobs_and_other_nodes_follow() {
    std::env::set_var("KEYHOLD_REWRAP_GRACE_MS", "0");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let (n1, unit1) = node(&store);
    let (n2, unit2) = node(&store);
    let (p1, p2, q1, q2) = ([1u8; 32], [2u8; 32], [5u8; 32], [9u8; 32]);
    let [a, b, c] = with_first_key(&n1, p1, p2);
    signed(&n2, part_cmd(&n2, &a, "unseal", p1), &a).unwrap();
    signed(&n2, part_cmd(&n2, &b, "unseal", p2), &b).unwrap();
    assert!(!unit2.is_sealed());

    // A stored blob under the first key (an import token's private key).
    let old = unit1
        .wrap_material(&token_binding("t"), b"private key")
        .unwrap();
    store
        .put_import_token(&keyhold_core::model::ImportToken {
            instance_id: "inst".into(),
            created_at: 0,
            expires_at: i64::MAX,
            max_retrievals: 1,
            remaining_retrievals: 1,
            public_key_pem: String::new(),
            nonce: vec![0; 12],
            wrapped_private_key: old.clone(),
            token_id: "t".into(),
        })
        .unwrap();

    // Rotating to the current key is refused (alice and carol load parts that XOR to it).
    signed(&n1, part_cmd(&n1, &a, "new", [5u8; 32]), &a).unwrap();
    signed(&n1, part_cmd(&n1, &c, "new", [6u8; 32]), &c).unwrap();
    let same = n1.status().unwrap()["registers"]["new"]["verification_pattern"]
        .as_str()
        .unwrap()
        .to_string();
    let cmd =
        Command::new("ci", seq(&n1), Verb::Commit).with("verification_pattern", same.as_str());
    signed(&n1, cmd.clone(), &a).unwrap();
    signed(&n1, cmd, &c).unwrap();
    let cmd =
        Command::new("ci", seq(&n1), Verb::Activate).with("verification_pattern", same.as_str());
    assert_eq!(
        signed(&n1, cmd, &a).unwrap_err().reason,
        Reason::CeremonyState
    );
    assert!(n1.status().unwrap()["rotation"].is_null());
    n1.regs().unwrap().new.clear();

    // Rotate on node 1 (alice and carol hold the new key's parts).
    load_commit_activate(&n1, [(&a, q1), (&c, q2)], [&b, &c]);
    // Node 2 holds only the old key: it seals itself rather than fail on new blobs.
    wait_for("node 2 to seal", || unit2.is_sealed());
    wait_for("the rotation to finish", || {
        n1.status().unwrap()["rotation"].is_null()
    });
    let st = n1.status().unwrap();
    let vp2 = st["registers"]["current"]["verification_pattern"].clone();
    let new = store
        .get_import_token("inst")
        .unwrap()
        .unwrap()
        .wrapped_private_key;
    assert_ne!(new, old);
    // The old key is retired on node 1: only the re-wrapped blob opens.
    assert_eq!(
        &unit1.unwrap_material(&token_binding("t"), &new).unwrap()[..],
        b"private key"
    );
    assert_eq!(
        unit1
            .unwrap_material(&token_binding("t"), &old)
            .unwrap_err(),
        CryptoError::BlobIntegrity
    );
    // Node 2 unseals with the new key's parts only; the old key's are refused.
    let e = signed(&n2, part_cmd(&n2, &a, "unseal", p1), &a).unwrap_err();
    assert_eq!(e.reason, Reason::KeyPartMismatch);
    signed(&n2, part_cmd(&n2, &a, "unseal", q1), &a).unwrap();
    match signed(&n2, part_cmd(&n2, &c, "unseal", q2), &c).unwrap() {
        Outcome::Unsealed {
            verification_pattern,
            ..
        } => assert_eq!(verification_pattern, vp2.as_str().unwrap()),
        other => panic!("not unsealed: {other:?}"),
    }
    assert_eq!(
        &unit2.unwrap_material(&token_binding("t"), &new).unwrap()[..],
        b"private key"
    );

    // Zeroize on node 2 reaches node 1 through the store.
    let z = Command::new("ci", seq(&n2), Verb::Zeroize)
        .with("verification_pattern", vp2.as_str().unwrap());
    signed(&n2, z.clone(), &a).unwrap();
    signed(&n2, z, &b).unwrap();
    assert_eq!(
        unit2
            .unwrap_material(&token_binding("t"), &new)
            .unwrap_err(),
        CryptoError::Zeroized
    );
    wait_for("node 1 to zeroize", || unit1.is_zeroized());
    assert_eq!(
        unit1
            .unwrap_material(&token_binding("t"), &new)
            .unwrap_err(),
        CryptoError::Zeroized
    );
}
