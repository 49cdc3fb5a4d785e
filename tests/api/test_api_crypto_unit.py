"""The crypto unit under the API (DESIGN §2). The whole API suite runs once per unit:
KEYHOLD_CRYPTO_UNIT=soft (default) or pkcs11 (with KEYHOLD_PKCS11_MODULE, _TOKEN and
_PIN_FILE set, as scripts/suites does with the SoftHSM token of scripts/install-test-deps).
These tests check what must hold for either unit:

- imported root key bytes never appear (raw, hex or base64) in the data directory
  (the SQLite file and its WAL) or in the server log, even at trace level;
- a stored blob that was tampered with, or swapped with another key's blob in the
  database, is refused with a clear error, while untouched keys keep working.

They read the database file, so their servers use SQLite (`--store sqlite://…`, which
beats KEYHOLD_STORE) whatever store the rest of the suite runs on: they are about the unit.
"""
import base64
import os
import sqlite3

from api_helpers import assert_kp_error, b64, check_status, unb64

UNIT = os.environ.get("KEYHOLD_CRYPTO_UNIT", "soft")


def _forms(secret: bytes):
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), b64(secret).encode(),
            base64.urlsafe_b64encode(secret), base64.urlsafe_b64encode(secret).rstrip(b"=")]


def test_unit_in_use(server_factory):
    srv = server_factory()
    master_file = (srv.data_dir / "master.key").exists()
    if UNIT == "pkcs11":
        assert not master_file, "the PKCS#11 unit must not keep a master key in the data directory"
    else:
        assert master_file


def _sqlite(data_dir):
    return ["--store", f"sqlite://{data_dir}/keyhold.db"]


def test_no_root_key_plaintext_in_database_or_log(server_factory, tmp_path_factory):
    d = tmp_path_factory.mktemp("keyhold-unit")
    srv = server_factory(data_dir=d, extra=_sqlite(d), env={"KEYHOLD_LOG": "trace", "RUST_LOG": "trace"})
    c = srv.client()
    known = [os.urandom(n) for n in (32, 16, 24, 32)]
    kids = []
    for m in known[:3]:
        kids.append(check_status(c.create_key_resp(payload=b64(m)), 201).json()["resources"][0]["id"])
    c.rotate(kids[0], {"payload": b64(known[3])})
    for kid in kids:
        w = c.wrap(kid, os.urandom(32), aad=["x"])
        c.unwrap(kid, w["ciphertext"], aad=["x"])
    srv.kill()  # what is on disk now is what an attacker with the disk gets
    found = []
    files = [f for f in srv.data_dir.rglob("*") if f.is_file()] + [srv.log_path]
    assert any(f.name.startswith("keyhold.db") for f in files), files
    for f in files:
        data = f.read_bytes()
        for i, m in enumerate(known):
            for form in _forms(m):
                if form in data:
                    found.append(f"root key {i} ({len(m)} bytes) in {f.name}")
    assert not found, found


def _blobs(db):
    con = sqlite3.connect(db)
    try:
        return con, {(k, v): b for k, v, b in con.execute("SELECT key_id, version_id, blob FROM key_versions")}
    except Exception:
        con.close()
        raise


def test_tampered_and_swapped_blobs_are_refused(server_factory, tmp_path_factory):
    d = tmp_path_factory.mktemp("keyhold-unit")
    srv = server_factory(data_dir=d, extra=_sqlite(d))
    c = srv.client()
    a, b, d = (c.root_key()["id"] for _ in range(3))
    wa, wb, wd = (c.wrap(k) for k in (a, b, d))  # generated DEKs come back in "plaintext"
    data_dir = srv.data_dir
    srv.stop()

    con, blobs = _blobs(data_dir / "keyhold.db")
    with con:
        (ka, va), = [k for k in blobs if k[0] == a]
        (kb, vb), = [k for k in blobs if k[0] == b]
        # Swap A's and B's blobs, as a database writer could.
        con.execute("UPDATE key_versions SET blob = ? WHERE version_id = ?", (blobs[(kb, vb)], va))
        con.execute("UPDATE key_versions SET blob = ? WHERE version_id = ?", (blobs[(ka, va)], vb))
    con.close()

    srv2 = server_factory(data_dir=data_dir, extra=_sqlite(data_dir))
    c2 = srv2.client()
    for kid, w in ((a, wa), (b, wb)):
        r = c2.unwrap_resp(kid, w["ciphertext"])
        res = assert_kp_error(r, 409, "STORED_KEY_INTEGRITY_ERR")
        assert "failed its integrity check" in res["reasons"][0]["message"], res
        assert_kp_error(c2.wrap_resp(kid, os.urandom(16)), 409, "STORED_KEY_INTEGRITY_ERR")
    assert unb64(c2.unwrap(d, wd["ciphertext"])["plaintext"]) == unb64(wd["plaintext"])
    srv2.stop()

    # Put them back: both work again. Then flip one bit inside D's blob.
    con, _ = _blobs(data_dir / "keyhold.db")
    with con:
        con.execute("UPDATE key_versions SET blob = ? WHERE version_id = ?", (blobs[(ka, va)], va))
        con.execute("UPDATE key_versions SET blob = ? WHERE version_id = ?", (blobs[(kb, vb)], vb))
        (kd, vd), = [k for k in blobs if k[0] == d]
        bad = bytearray(blobs[(kd, vd)])
        bad[len(bad) // 2] ^= 0x04
        con.execute("UPDATE key_versions SET blob = ? WHERE version_id = ?", (bytes(bad), vd))
    con.close()
    srv3 = server_factory(data_dir=data_dir, extra=_sqlite(data_dir))
    c3 = srv3.client()
    assert unb64(c3.unwrap(a, wa["ciphertext"])["plaintext"]) == unb64(wa["plaintext"])
    assert unb64(c3.unwrap(b, wb["ciphertext"])["plaintext"]) == unb64(wb["plaintext"])
    r = c3.unwrap_resp(d, wd["ciphertext"])
    assert_kp_error(r, 409, "STORED_KEY_INTEGRITY_ERR")
    srv3.stop()
    assert "stored key material failed its integrity check" in srv3.log_path.read_text(errors="replace")
