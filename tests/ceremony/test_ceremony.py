"""The master-key ceremony end to end through the CLI (issue #3):

3 administrators, signature threshold 2, a master key in two parts held by two of them;
a command signed by one administrator does not run; keys and wrapped DEKs made after
activation; restart -> sealed (key operations 503 CRYPTO_UNIT_SEALED_ERR) -> unseal with
the two parts -> every DEK wrapped before the restart unwraps. A wrong key part and a wrong
passphrase are each refused with a clear error and change nothing.

Each administrator's files sit in their own folder, as at separate terminals.
"""
import json
import os
import subprocess
from pathlib import Path

import requests

from api_helpers import assert_kp_error, key_envelope, key_resource, keyhold_bin, start_server, unb64

CEREMONY = ["--master-key", "ceremony"]
PASS = {"alice": "alice admin pass", "bob": "bob admin pass", "carol": "carol admin pass"}
PART_PASS = {"alice": "alice part pass", "bob": "bob part pass"}


class Admin:
    def __init__(self, name: str, root: Path, dev_json: Path):
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.dev_json = dev_json

    @property
    def key(self):
        return str(self.dir / f"{self.name}.key")

    @property
    def pub(self):
        return str(self.dir / f"{self.name}.pub")

    @property
    def part(self):
        return str(self.dir / f"{self.name}.part")

    def run(self, *args, admin_pass=None, part_pass=None, ok=True):
        env = dict(os.environ)
        env.pop("KEYHOLD_ADMIN_PASSPHRASE", None)
        env.pop("KEYHOLD_PART_PASSPHRASE", None)
        env["KEYHOLD_ADMIN_PASSPHRASE"] = admin_pass if admin_pass is not None else PASS[self.name]
        if part_pass is not None or self.name in PART_PASS:
            env["KEYHOLD_PART_PASSPHRASE"] = part_pass if part_pass is not None else PART_PASS[self.name]
        r = subprocess.run([keyhold_bin(), "ceremony", "--dev-json", str(self.dev_json), *args],
                           cwd=self.dir, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=120)
        out = r.stdout + r.stderr
        if ok:
            assert r.returncode == 0, f"{self.name}: keyhold ceremony {' '.join(args)} failed:\n{out}"
        else:
            assert r.returncode != 0, f"{self.name}: keyhold ceremony {' '.join(args)} should fail:\n{out}"
        return out

    def sign(self, *args, **kw):
        return self.run(*args, "--admin-key", self.key, **kw)


def status(admin: Admin) -> dict:
    return json.loads(admin.run("status", "--json"))


def raw(kp, method, path, body=None):
    """A request without the API suite's "never a 5xx" invariant: sealed answers 503 by design."""
    h = {"Authorization": "Bearer " + kp.token, "Bluemix-Instance": kp.server.instance_id}
    return requests.request(method, kp.server.url + path, json=body, headers=h, timeout=60)


def sealed_error(resp):
    assert_kp_error(resp, 503, "CRYPTO_UNIT_SEALED_ERR")
    assert "sealed" in resp.json()["resources"][0]["reasons"][0]["message"]


def create_key(kp):
    return raw(kp, "POST", "/api/v2/keys", key_envelope(key_resource()))


def wrap(kp, kid, body):
    return raw(kp, "POST", f"/api/v2/keys/{kid}/actions/wrap", body)


def unwrap(kp, kid, ct, aad):
    body = {"ciphertext": ct}
    if aad is not None:
        body["aad"] = aad
    return raw(kp, "POST", f"/api/v2/keys/{kid}/actions/unwrap", body)


def test_ceremony_end_to_end(tmp_path):
    data = tmp_path / "server"
    srv = start_server(data, extra=CEREMONY)
    try:
        dev_json = data / "dev.json"
        alice, bob, carol = (Admin(n, tmp_path, dev_json) for n in ("alice", "bob", "carol"))
        kp = srv.client()

        # A fresh ceremony server is sealed: key operations are refused with a clear reason.
        assert not (data / "master.key").exists(), "ceremony mode must not keep a master key file"
        st = status(alice)
        assert st["sealed"] is True and st["imprint_mode"] is True
        sealed_error(create_key(kp))

        # Each administrator makes a signature key at their own terminal (three algorithms).
        alice.run("admin-keygen", "--name", "alice", "--out", alice.key)
        bob.run("admin-keygen", "--name", "bob", "--algorithm", "p256", "--out", bob.key)
        carol.run("admin-keygen", "--name", "carol", "--algorithm", "p521", "--out", carol.key)
        alice.run("part-generate", "--holder", "alice", "--out", alice.part)
        bob.run("part-generate", "--holder", "bob", "--out", bob.part)

        # Imprint mode: each enrolls themselves; enrolling someone else is refused.
        out = alice.sign("add-admin", "--new-admin", bob.pub, ok=False)
        assert "CEREMONY_SIGNATURE_ERR" in out and "own key" in out
        for a in (alice, bob, carol):
            assert "EXECUTED" in a.sign("add-admin")
        out = alice.sign("exit-imprint", ok=False)
        assert "thresholds" in out
        alice.sign("set-thresholds", "--signature", "2", "--revocation", "2")
        alice.sign("exit-imprint")
        st = status(alice)
        assert st["imprint_mode"] is False
        assert [a["name"] for a in st["admins"]] == ["alice", "bob", "carol"]
        assert [a["algorithm"] for a in st["admins"]] == ["ed25519", "p256", "p521"]
        assert (st["signature_threshold"], st["revocation_threshold"]) == (2, 2)

        # A command signed by one administrator does not run; signing twice does not count twice.
        out = alice.sign("set-thresholds", "--signature", "3", "--revocation", "2")
        assert "PENDING" in out and "1 of 2" in out
        out = alice.sign("set-thresholds", "--signature", "3", "--revocation", "2", ok=False)
        assert "CEREMONY_STATE_ERR" in out and "already signed" in out
        st = status(alice)
        assert st["signature_threshold"] == 2
        assert [p["signed_by"] for p in st["pending"]] == [["alice"]]

        # Two key parts, loaded by their holders; then commit and activate, each signed by two.
        assert "1 of 2" in alice.sign("load-part", "--parts", "2", "--part", alice.part)
        assert "2 of 2" in bob.sign("load-part", "--parts", "2", "--part", bob.part)
        st = status(alice)
        new = st["registers"]["new"]
        assert new["state"] == "full_uncommitted"
        vp = new["verification_pattern"]
        assert len(vp) == 32
        assert [p["holder"] for p in new["parts_loaded"]] == ["alice", "bob"]
        out = alice.sign("commit")
        assert vp in out and "PENDING" in out
        assert status(alice)["registers"]["new"]["state"] == "full_uncommitted"
        assert "EXECUTED" in carol.sign("commit")
        assert status(alice)["registers"]["new"]["state"] == "committed"
        assert "PENDING" in bob.sign("activate")
        sealed_error(create_key(kp))
        assert "EXECUTED" in carol.sign("activate")
        st = status(alice)
        assert st["sealed"] is False
        assert st["registers"]["current"] == {**st["registers"]["current"], "state": "valid",
                                              "verification_pattern": vp}
        assert st["registers"]["new"]["state"] == "empty"

        # Keys and DEKs under the ceremony's master key.
        wrapped = []
        for _ in range(3):
            kid = kp.root_key()["id"]
            for n in range(3):
                dek = os.urandom(32)
                aad = [f"ctx-{n}"]
                wrapped.append((kid, dek, aad, kp.wrap(kid, dek, aad=aad)["ciphertext"]))
        std = kp.standard_key()
        std_payload = std["payload"]
    finally:
        srv.stop()

    # Restart: sealed until the part holders unseal it.
    srv = start_server(data, extra=CEREMONY)
    try:
        kp = srv.client()
        st = status(alice)
        assert st["sealed"] is True
        assert st["registers"]["current"]["verification_pattern"] == vp
        kid, dek, aad, ct = wrapped[0]
        sealed_error(unwrap(kp, kid, ct, aad))
        sealed_error(wrap(kp, kid, {"plaintext": "eHh4eHh4eHh4eHh4eHh4eA=="}))
        sealed_error(raw(kp, "GET", f"/api/v2/keys/{std['id']}"))
        assert kp.get("/api/v2/keys").status_code == 200  # metadata needs no master key

        assert "1 of 2" in alice.sign("unseal", "--part", alice.part)

        # A wrong key part: refused, nothing changed (alice's part stays loaded, still sealed).
        stray = bob.dir / "stray.part"
        bob.run("part-generate", "--holder", "bob", "--out", str(stray))
        out = bob.sign("unseal", "--part", str(stray), ok=False)
        assert "KEY_PART_MISMATCH_ERR" in out and "not a part of the current master key" in out
        # A wrong part passphrase, and a wrong administrator passphrase: refused before sending.
        out = bob.sign("unseal", "--part", bob.part, part_pass="not bob's", ok=False)
        assert "wrong passphrase" in out
        out = bob.sign("unseal", "--part", bob.part, admin_pass="not bob's", ok=False)
        assert "wrong passphrase" in out
        # Carol holds no part of this key (and cannot open bob's file without his passphrase).
        out = carol.sign("unseal", "--part", bob.part, part_pass="guess", ok=False)
        assert "wrong passphrase" in out
        st = status(alice)
        assert st["sealed"] is True
        assert [p["holder"] for p in st["registers"]["unseal"]["parts_loaded"]] == ["alice"]
        sealed_error(unwrap(kp, kid, ct, aad))

        out = bob.sign("unseal", "--part", bob.part)
        assert "UNSEALED" in out and vp in out
        assert status(alice)["sealed"] is False

        # Every DEK wrapped before the restart unwraps.
        for kid, dek, aad, ct in wrapped:
            assert unb64(kp.unwrap(kid, ct, aad=aad)["plaintext"]) == dek
        assert kp.get(f"/api/v2/keys/{std['id']}").json()["resources"][0]["payload"] == std_payload

        # The status reveals no secret: no field carries key material.
        text = json.dumps(status(alice))
        for name in ("alice", "bob"):
            part_file = json.loads(Path(getattr({"alice": alice, "bob": bob}[name], "part")).read_text())
            assert part_file["sealed"]["ciphertext"] not in text
    finally:
        srv.stop()


def test_file_mode_has_no_ceremony(tmp_path):
    data = tmp_path / "server"
    srv = start_server(data)
    try:
        admin = Admin("alice", tmp_path, data / "dev.json")
        st = status(admin)
        assert st == {"master_key_source": "file", "sealed": False}
        admin.run("admin-keygen", "--name", "alice", "--out", admin.key)
        out = admin.sign("add-admin", ok=False)
        assert "--master-key ceremony" in out
        r = srv.client().post("/ceremony/v1/commands", {"command": {}, "admin": "x", "signature": ""})
        assert_kp_error(r, 409, "CEREMONY_DISABLED_ERR")
    finally:
        srv.stop()
    # A deployment made with a file master key is not served by the ceremony.
    srv = start_server(data, extra=CEREMONY, wait=False)
    try:
        assert srv.proc.wait(60) != 0
        assert "cannot be served with --master-key ceremony" in srv.stderr_tail()
    finally:
        srv.stop()


def test_unseal_needs_the_signature_threshold_of_administrators(tmp_path):
    """Threshold 3 with a key in two parts: the two holders alone do not unseal it; a third
    administrator's approval (signed, without a part) does."""
    data = tmp_path / "server"
    srv = start_server(data, extra=CEREMONY)
    try:
        dev_json = data / "dev.json"
        alice, bob, carol = (Admin(n, tmp_path, dev_json) for n in ("alice", "bob", "carol"))
        for a in (alice, bob, carol):
            a.run("admin-keygen", "--name", a.name, "--out", a.key)
            a.sign("add-admin")
        alice.run("part-generate", "--holder", "alice", "--out", alice.part)
        bob.run("part-generate", "--holder", "bob", "--out", bob.part)
        alice.sign("set-thresholds", "--signature", "3", "--revocation", "3")
        alice.sign("exit-imprint")
        alice.sign("load-part", "--parts", "2", "--part", alice.part)
        bob.sign("load-part", "--parts", "2", "--part", bob.part)
        for verb in ("commit", "activate"):
            assert "PENDING" in alice.sign(verb)
            assert "PENDING" in bob.sign(verb)
            assert "EXECUTED" in carol.sign(verb)
        kp = srv.client()
        kid = kp.root_key()["id"]
        ct = kp.wrap(kid, b"k" * 32)["ciphertext"]
    finally:
        srv.stop()

    srv = start_server(data, extra=CEREMONY)
    try:
        kp = srv.client()
        alice.sign("unseal", "--part", alice.part)
        out = bob.sign("unseal", "--part", bob.part)
        assert "still sealed" in out
        assert status(alice)["sealed"] is True
        sealed_error(unwrap(kp, kid, ct, None))
        assert "UNSEALED" in carol.sign("unseal")
        assert unb64(kp.unwrap(kid, ct)["plaintext"]) == b"k" * 32
    finally:
        srv.stop()
