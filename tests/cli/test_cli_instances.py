"""DESIGN §1's five steps through the CLI: `keyhold instances …` and
`keyhold authorizations …`, then envelope encryption through the new kms instance."""
import os
import uuid

import pytest


def ok(r):
    assert r.rc == 0, f"rc={r.rc}\nstdout={r.out}\nstderr={r.err}"
    return r


def fails(r, rc, *needles):
    assert r.rc == rc, f"expected rc {rc}, got {r.rc}\nstdout={r.out}\nstderr={r.err}"
    assert r.err.startswith("keyhold: error:"), r.err
    for n in needles:
        assert n in r.err, f"{n!r} not in stderr: {r.err}"
    return r


@pytest.mark.parametrize("cmd", [
    ["instances", "create"], ["instances", "list"], ["instances", "get"], ["instances", "update"],
    ["instances", "delete"], ["instances", "connection-info"], ["instances", "credentials"],
    ["authorizations", "create"], ["authorizations", "list"], ["authorizations", "delete"],
])
def test_help_has_examples(kh, cmd):
    r = ok(kh(*cmd, "--help"))
    assert "Example" in r.out and "keyhold " + cmd[0] in r.out


def test_five_steps_through_the_cli(kh, server, tmp_path):
    name = f"crypto-{uuid.uuid4().hex[:8]}"
    # 1. Provision a crypto instance.
    hs = ok(kh("instances", "create", name, "--service", "hs-crypto", "--units", "2", "-o", "json")).json()
    assert hs["resource_plan_id"] == "hs-crypto-standard" and hs["parameters"] == {"units": 2}
    # 2. Look up its id (table and JSON).
    table = ok(kh("instances", "list", "--service", "hs-crypto")).out
    assert table.splitlines()[0].split()[:3] == ["ID", "NAME", "SERVICE"] and name in table
    found = [i for i in ok(kh("instances", "list", "-o", "json")).json() if i["name"] == name]
    hs_id = found[0]["guid"]
    assert ok(kh("instances", "get", hs_id, "-o", "json")).json()["crn"] == hs["crn"]
    # 3. Its connection info.
    info = ok(kh("instances", "connection-info", hs_id, "-o", "json")).json()
    assert info["instance_id"] == hs_id and info["kms"]["public"] == server.url.split("://")[1]
    assert "kms public" in ok(kh("instances", "connection-info", hs_id)).out
    # 4. A kms instance bound to it.
    k = ok(kh("instances", "create", "my-kms", "--service", "kms", "--crypto-instance", hs_id, "-o", "json")).json()
    assert k["plan"] == "dedicated"
    kms_id = k["guid"]
    fails(kh("keys", "create", "r", "--instance", kms_id), 3, "CRYPTO_INSTANCE_AUTHORIZATION_ERR")
    # 5. Authorize kms → hs-crypto (Reader).
    a = ok(kh("authorizations", "create", "--source-service", "kms", "--source-id", kms_id,
              "--target-service", "hs-crypto", "--target-id", hs_id, "--role", "Reader", "-o", "json")).json()
    assert a["roles"] == ["Reader"]
    listing = ok(kh("authorizations", "list")).out
    assert a["id"] in listing and f"kms/{kms_id}" in listing

    # Envelope encryption through the new instance.
    key = ok(kh("keys", "create", "cli-root", "--instance", kms_id, "-o", "json")).json()
    dek = tmp_path / "dek.bin"
    dek.write_bytes(os.urandom(32))
    w = ok(kh("keys", "wrap", key["id"], "--plaintext-file", dek, "--instance", kms_id, "-o", "json")).json()
    back = tmp_path / "back.bin"
    ok(kh("keys", "unwrap", key["id"], "--ciphertext", w["ciphertext"], "--instance", kms_id, "--out", back))
    assert back.read_bytes() == dek.read_bytes()

    # Removing the authorization stops key operations (exit 3); restoring restores them.
    ok(kh("authorizations", "delete", a["id"]))
    fails(kh("keys", "wrap", key["id"], "--instance", kms_id), 3, "CRYPTO_INSTANCE_AUTHORIZATION_ERR")
    ok(kh("authorizations", "create", "--source-service", "kms", "--source-id", kms_id,
          "--target-service", "hs-crypto", "--target-id", hs_id))
    ok(kh("keys", "wrap", key["id"], "--instance", kms_id))

    # The crypto instance in use cannot be deleted (exit 4); updates work.
    fails(kh("instances", "delete", hs_id), 4, "INSTANCE_IN_USE_ERR")
    upd = ok(kh("instances", "update", hs_id, "--units", "3", "-o", "json")).json()
    assert upd["parameters"]["units"] == 3
    fails(kh("instances", "delete", kms_id), 4, "INSTANCE_IN_USE_ERR")
    r = ok(kh("instances", "delete", kms_id, "--force", "-o", "json")).json()
    assert r["state"] == "pending_reclamation"


def test_cli_errors_have_exit_codes(kh, server):
    fails(kh("instances", "get", str(uuid.uuid4())), 2, "NOT_FOUND_ERR")
    fails(kh("instances", "create", "x", "--service", "hs-crypto", "--units", "0"), 1, "INVALID_FIELD_ERR")
    fails(kh("authorizations", "delete", "nope"), 2, "NOT_FOUND_ERR")
    r = kh("instances", "update", str(uuid.uuid4()))
    assert r.rc == 1 and "nothing to change" in r.err
    # A service ID holds no platform role: exit 3.
    fails(kh("instances", "create", "x", "--service", "kms", apikey=server.service_apikey), 3)
    # Credentials for a storage instance are printed once.
    cos = ok(kh("instances", "create", "photos", "--service", "cloud-object-storage", "-o", "json")).json()
    cred = ok(kh("instances", "credentials", cos["guid"], "-o", "json")).json()
    assert cred["credentials"]["apikey"].startswith("kh_")
