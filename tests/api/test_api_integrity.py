"""Stored key material altered in the database (DESIGN §2, issue #3 must-show 5): with the
server stopped, one root key's blob and one standard key's blob are tampered with and two
root keys' blobs are swapped (SQLite file edited with python's sqlite3); after a restart each
of those keys is refused with 409 STORED_KEY_INTEGRITY_ERR, the refused requests change
nothing, and the other keys work as before.

The store is always an SQLite file here (--store overrides $KEYHOLD_STORE), since the test
edits it directly."""
import os

import sqlite3

import requests

from api_helpers import assert_kp_error, start_server, unb64


def raw(kp, method, path, body=None):
    h = {"Authorization": "Bearer " + kp.token, "Bluemix-Instance": kp.server.instance_id}
    return requests.request(method, kp.server.url + path, json=body, headers=h, timeout=60)


def blobs(db):
    with sqlite3.connect(db) as c:
        return {kid: bytes(b) for kid, b in c.execute("SELECT key_id, blob FROM key_versions")}


def refused(resp):
    assert_kp_error(resp, 409, "STORED_KEY_INTEGRITY_ERR")
    msg = resp.json()["resources"][0]["reasons"][0]["message"]
    assert "integrity check" in msg and "nothing was changed" in msg


def test_tampered_and_swapped_blobs_are_refused_and_change_nothing(tmp_path):
    data = tmp_path / "server"
    db = data / "keyhold.db"
    store = ["--store", f"sqlite://{db}"]
    srv = start_server(data, extra=store)
    try:
        kp = srv.client()
        ids = {n: kp.root_key()["id"] for n in ("tampered", "swap1", "swap2", "fine")}
        std = {n: kp.standard_key() for n in ("std_tampered", "std_fine")}
        deks = {}
        for n, kid in ids.items():
            dek = os.urandom(32)
            deks[n] = (dek, kp.wrap(kid, dek, aad=["a"])["ciphertext"])
    finally:
        srv.stop()

    before = blobs(db)
    with sqlite3.connect(db) as c:
        t = bytearray(before[ids["tampered"]])
        t[len(t) // 2] ^= 0x01
        c.execute("UPDATE key_versions SET blob = ? WHERE key_id = ?", (bytes(t), ids["tampered"]))
        st = bytearray(before[std["std_tampered"]["id"]])
        st[-1] ^= 0x80
        c.execute("UPDATE key_versions SET blob = ? WHERE key_id = ?", (bytes(st), std["std_tampered"]["id"]))
        c.execute("UPDATE key_versions SET blob = ? WHERE key_id = ?", (before[ids["swap2"]], ids["swap1"]))
        c.execute("UPDATE key_versions SET blob = ? WHERE key_id = ?", (before[ids["swap1"]], ids["swap2"]))
    edited = blobs(db)

    srv = start_server(data, extra=store)
    try:
        kp = srv.client()
        for n in ("tampered", "swap1", "swap2"):
            kid = ids[n]
            dek, ct = deks[n]
            refused(raw(kp, "POST", f"/api/v2/keys/{kid}/actions/unwrap", {"ciphertext": ct, "aad": ["a"]}))
            refused(raw(kp, "POST", f"/api/v2/keys/{kid}/actions/wrap", {}))
            refused(raw(kp, "POST", f"/api/v2/keys/{kid}/actions/rewrap", {"ciphertext": ct, "aad": ["a"]}))
            # Metadata needs no key material: the key is still there, in its state.
            r = raw(kp, "GET", f"/api/v2/keys/{kid}/metadata")
            assert r.status_code == 200 and r.json()["resources"][0]["state"] == 1
        refused(raw(kp, "GET", f"/api/v2/keys/{std['std_tampered']['id']}"))

        # Other keys are unaffected.
        dek, ct = deks["fine"]
        assert unb64(kp.unwrap(ids["fine"], ct, aad=["a"])["plaintext"]) == dek
        r = kp.get(f"/api/v2/keys/{std['std_fine']['id']}")
        assert r.json()["resources"][0]["payload"] == std["std_fine"]["payload"]

        # The refused requests changed nothing in the store.
        assert blobs(db) == edited
    finally:
        srv.stop()

    # Restoring the original rows (from a backup) brings the keys back.
    with sqlite3.connect(db) as c:
        for kid, b in before.items():
            c.execute("UPDATE key_versions SET blob = ? WHERE key_id = ?", (b, kid))
    srv = start_server(data, extra=store)
    try:
        kp = srv.client()
        for n, kid in ids.items():
            dek, ct = deks[n]
            assert unb64(kp.unwrap(kid, ct, aad=["a"])["plaintext"]) == dek
    finally:
        srv.stop()
