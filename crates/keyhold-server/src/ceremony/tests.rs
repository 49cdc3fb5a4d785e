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
