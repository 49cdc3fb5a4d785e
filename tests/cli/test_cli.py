"""The `keyhold` client commands against a running dev server: every command, its JSON
and table output, and its error paths (exit codes: 0 ok, 1 usage/local, 2 not found,
3 permission/auth, 4 conflict/state, 5 server/network)."""
import base64
import os
import stat
import uuid

import pytest


def uniq(p="k"):
    return f"{p}-{uuid.uuid4().hex[:8]}"


def ok(r):
    assert r.rc == 0, f"rc={r.rc}\nstdout={r.out}\nstderr={r.err}"
    return r


def fails(r, rc, *needles):
    assert r.rc == rc, f"expected rc {rc}, got {r.rc}\nstdout={r.out}\nstderr={r.err}"
    assert r.err.startswith("keyhold: error:") or rc == 1, r.err
    for n in needles:
        assert n in r.err, f"{n!r} not in stderr: {r.err}"
    return r


def root_key(kh, **kw):
    args = ["keys", "create", uniq("root"), "-o", "json"]
    for a in kw.get("aliases", []):
        args += ["--alias", a]
    return ok(kh(*args)).json()


# -- help ------------------------------------------------------------------------------

COMMANDS = [
    ["keys"], ["keys", "create"], ["keys", "import"], ["keys", "list"], ["keys", "show"],
    ["keys", "wrap"], ["keys", "unwrap"], ["keys", "rewrap"], ["keys", "rotate"],
    ["keys", "disable"], ["keys", "enable"], ["keys", "delete"], ["keys", "restore"],
    ["keys", "purge"], ["keys", "versions"], ["keys", "move"], ["keys", "approve-deletion"],
    ["keys", "cancel-deletion"], ["keys", "registrations"], ["keys", "sync"],
    ["policies"], ["policies", "show"], ["policies", "set-rotation"], ["policies", "set-dual-auth"],
    ["policies", "instance"], ["policies", "set-instance"],
    ["aliases"], ["aliases", "create"], ["aliases", "delete"], ["aliases", "list"],
    ["rings"], ["rings", "list"], ["rings", "create"], ["rings", "delete"],
    ["import-token"], ["import-token", "create"], ["import-token", "show"],
    ["profiles"], ["profiles", "list"], ["profiles", "add"], ["profiles", "remove"], ["profiles", "use"],
    ["encrypt"], ["decrypt"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c))
def test_help_has_examples(kh, cmd):
    r = ok(kh(*cmd, "--help", dev=False))
    assert "Example" in r.out, r.out


def test_top_level_help_documents_exit_codes(kh):
    r = ok(kh("--help", dev=False))
    for line in ["Exit codes", "2  not found", "3  permission", "4  conflict", "5  server or network"]:
        assert line in r.out


def test_usage_error_exits_1(kh):
    fails(kh("keys", "create"), 1)
    fails(kh("keys", "frobnicate"), 1)


# -- keys --------------------------------------------------------------------------------

def test_create_show_list(kh):
    name = uniq("root")
    alias = uniq("al")
    k = ok(kh("keys", "create", name, "--alias", alias, "--description", "d", "-o", "json")).json()
    assert k["name"] == name and k["state"] == 1 and k["extractable"] is False
    assert "payload" not in k
    assert ok(kh("keys", "show", alias, "-o", "json")).json()["id"] == k["id"]
    table = ok(kh("keys", "show", k["id"])).out
    assert "active (1)" in table and name in table and "root" in table
    listed = ok(kh("keys", "list", "--type", "root", "-o", "json")).json()
    assert k["id"] in [x["id"] for x in listed]
    assert all(not x["extractable"] for x in listed)
    assert name in ok(kh("keys", "list")).out
    assert ok(kh("keys", "list", "--search", name, "-o", "json")).json()[0]["id"] == k["id"]


def test_standard_key_payload_only_on_request(kh):
    k = ok(kh("keys", "create", uniq("std"), "--standard", "-o", "json")).json()
    assert k["extractable"] is True and "payload" not in k
    assert "payload" not in ok(kh("keys", "show", k["id"], "-o", "json")).json()
    shown = ok(kh("keys", "show", k["id"], "--show-payload", "-o", "json")).json()
    assert len(base64.b64decode(shown["payload"])) == 32
    assert "payload" in ok(kh("keys", "show", k["id"], "--show-payload")).out


def test_not_found_exits_2(kh):
    r = fails(kh("keys", "show", "no-such-alias"), 2, "KEY_NOT_FOUND_ERR", "hint")
    assert "HTTP 404" in r.err
    fails(kh("keys", "wrap", str(uuid.uuid4())), 2, "KEY_NOT_FOUND_ERR")


def test_missing_permission_exits_3(kh, server):
    r = fails(kh("keys", "create", uniq("x"), apikey=server.service_apikey), 3, "UNAUTHORIZED_ERR")
    assert "role" in r.err
    k = root_key(kh)
    fails(kh("keys", "disable", k["id"], apikey=server.service_apikey), 3)
    # A Reader may still list and wrap.
    ok(kh("keys", "list", apikey=server.service_apikey))
    ok(kh("keys", "wrap", k["id"], apikey=server.service_apikey))


def test_bad_apikey_exits_3(kh):
    r = fails(kh("keys", "list", apikey="kh_not-a-real-key"), 3, "authentication failed")
    assert "kh_not-a-real-key" not in r.err, "the API key must not be echoed"


def test_unreachable_server_exits_5(kh, server):
    r = fails(kh("keys", "list", "--url", "http://127.0.0.1:9", "--iam-url", "http://127.0.0.1:9"),
              5, "cannot reach")
    assert "127.0.0.1:9" in r.err


def test_no_configuration_exits_1(kh):
    fails(kh("keys", "list", dev=False), 1, "no service URL")


def test_import_plain_and_standard(kh, tmp_path):
    m = tmp_path / "m.bin"
    m.write_bytes(os.urandom(32))
    k = ok(kh("keys", "import", uniq("imp"), "--material-file", m, "-o", "json")).json()
    assert k["imported"] is True and k["extractable"] is False
    s = tmp_path / "s.bin"
    s.write_bytes(b"my standard secret")
    k2 = ok(kh("keys", "import", uniq("imps"), "--standard", "--material-file", s, "--show-payload", "-o", "json")).json()
    assert base64.b64decode(k2["payload"]) == b"my standard secret"
    bad = tmp_path / "bad.bin"
    bad.write_bytes(os.urandom(17))
    fails(kh("keys", "import", uniq("bad"), "--material-file", bad), 1, "HTTP 400")
    fails(kh("keys", "import", uniq("bad"), "--material-file", tmp_path / "missing"), 1, "missing")


def test_import_token_and_secure_import(kh, tmp_path):
    t = ok(kh("import-token", "create", "--max-retrievals", "5", "-o", "json")).json()
    assert t["maxAllowedRetrievals"] == 5 and "payload" not in t
    shown = ok(kh("import-token", "show", "-o", "json")).json()
    assert "payload" not in shown and "nonce" not in shown
    with_key = ok(kh("import-token", "show", "--show-public-key", "-o", "json")).json()
    assert b"PUBLIC KEY" in base64.b64decode(with_key["payload"])
    m = tmp_path / "m.bin"
    m.write_bytes(os.urandom(32))
    k = ok(kh("keys", "import", uniq("sec"), "--material-file", m, "--secure", "-o", "json")).json()
    assert k["imported"] is True
    # The imported material really is the key: a wrap/unwrap round trip works, and a
    # secure rotation with new material is accepted.
    ct = ok(kh("keys", "wrap", k["id"], "-o", "json")).json()["ciphertext"]
    ok(kh("keys", "unwrap", k["id"], "--ciphertext", ct))
    m2 = tmp_path / "m2.bin"
    m2.write_bytes(os.urandom(32))
    ok(kh("keys", "rotate", k["id"], "--material-file", m2, "--secure"))
    assert len(ok(kh("keys", "versions", k["id"], "-o", "json")).json()) == 2
    m3 = tmp_path / "m3.bin"
    m3.write_bytes(os.urandom(20))
    fails(kh("keys", "import", uniq("sec"), "--material-file", m3, "--secure"), 1, "16, 24 or 32")


def test_wrap_unwrap_rewrap_rotate_versions(kh, tmp_path):
    k = root_key(kh)
    dek = os.urandom(32)
    f = tmp_path / "dek.bin"
    f.write_bytes(dek)
    w = ok(kh("keys", "wrap", k["id"], "--plaintext-file", f, "--aad", "ctx", "-o", "json")).json()
    assert "plaintext" not in w
    u = ok(kh("keys", "unwrap", k["id"], "--ciphertext", w["ciphertext"], "--aad", "ctx", "-o", "json")).json()
    assert base64.b64decode(u["plaintext"]) == dek
    fails(kh("keys", "unwrap", k["id"], "--ciphertext", w["ciphertext"], "--aad", "other"), 4,
          "UNPROCESSABLE_CIPHERTEXT_ERR")
    out = tmp_path / "out.bin"
    ok(kh("keys", "unwrap", k["id"], "--ciphertext", w["ciphertext"], "--aad", "ctx", "--out", out))
    assert out.read_bytes() == dek
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    gen = ok(kh("keys", "wrap", k["id"], "-o", "json")).json()
    assert "plaintext" not in gen
    gen = ok(kh("keys", "wrap", k["id"], "--show-plaintext", "-o", "json")).json()
    assert len(base64.b64decode(gen["plaintext"])) == 32

    r = ok(kh("keys", "rotate", k["id"]))
    assert "new version" in r.out
    versions = ok(kh("keys", "versions", k["id"], "-o", "json")).json()
    assert len(versions) == 2
    assert "VERSION" in ok(kh("keys", "versions", k["id"])).out
    u2 = ok(kh("keys", "unwrap", k["id"], "--ciphertext", w["ciphertext"], "--aad", "ctx", "-o", "json")).json()
    assert base64.b64decode(u2["plaintext"]) == dek and u2["rewrappedKeyVersion"]["id"] == versions[0]["id"]
    rw = ok(kh("keys", "rewrap", k["id"], "--ciphertext", w["ciphertext"], "--aad", "ctx", "-o", "json")).json()
    assert rw["rewrappedKeyVersion"]["id"] == versions[0]["id"]
    assert "to version" in ok(kh("keys", "rewrap", k["id"], "--ciphertext", w["ciphertext"], "--aad", "ctx")).out


def test_rotate_imported_key_needs_material(kh, tmp_path):
    m = tmp_path / "m.bin"
    m.write_bytes(os.urandom(32))
    k = ok(kh("keys", "import", uniq("imp"), "--material-file", m, "-o", "json")).json()
    fails(kh("keys", "rotate", k["id"]), 1, "KEY_PAYLOAD_REQ_ERR")
    m.write_bytes(os.urandom(32))
    ok(kh("keys", "rotate", k["id"], "--material-file", m))


def test_disable_enable(kh):
    k = root_key(kh)
    ok(kh("keys", "disable", k["id"]))
    assert ok(kh("keys", "show", k["id"], "-o", "json")).json()["state"] == 2
    fails(kh("keys", "wrap", k["id"]), 4, "KEY_ACTION_INVALID_STATE_ERR")
    fails(kh("keys", "disable", k["id"]), 4)
    ok(kh("keys", "enable", k["id"]))
    ok(kh("keys", "wrap", k["id"]))


def test_delete_restore_purge(kh):
    k = root_key(kh)
    r = ok(kh("keys", "delete", k["id"]))
    assert "restorable until" in r.out
    fails(kh("keys", "delete", k["id"]), 4, "KEY_DELETED_ERR")
    fails(kh("keys", "wrap", k["id"]), 4)
    restored = ok(kh("keys", "restore", k["id"], "-o", "json")).json()
    assert restored["state"] == 1
    fails(kh("keys", "purge", k["id"]), 4, "KEY_ACTION_INVALID_STATE_ERR")
    ok(kh("keys", "delete", k["id"], "--force", "-o", "json"))
    assert "purged" in ok(kh("keys", "purge", k["id"])).out
    fails(kh("keys", "show", k["id"]), 2)


def test_rings_and_move(kh):
    ring = uniq("ring")
    ok(kh("rings", "create", ring))
    assert ring in [r["id"] for r in ok(kh("rings", "list", "-o", "json")).json()]
    assert "default" in ok(kh("rings", "list")).out
    fails(kh("rings", "create", ring), 4, "DUPLICATE_RESOURCE_ERR")
    k = ok(kh("keys", "create", uniq("inring"), "--key-ring", ring, "-o", "json")).json()
    assert k["keyRingID"] == ring
    fails(kh("rings", "delete", ring), 4, "KEY_RING_NOT_EMPTY_ERR")
    moved = ok(kh("keys", "move", k["id"], "--ring", "default", "--key-ring", ring, "-o", "json")).json()
    assert moved["keyRingID"] == "default"
    ok(kh("rings", "delete", ring))
    assert ring not in ok(kh("rings", "list")).out


def test_aliases(kh):
    k = root_key(kh)
    a = uniq("alias")
    created = ok(kh("aliases", "create", k["id"], a, "-o", "json")).json()
    assert created["alias"] == a and created["keyId"] == k["id"]
    assert ok(kh("aliases", "list", a, "-o", "json")).json() == [a]
    assert ok(kh("keys", "show", a, "-o", "json")).json()["id"] == k["id"]
    other = root_key(kh)
    fails(kh("aliases", "create", other["id"], a), 4, "DUPLICATE_RESOURCE_ERR")
    fails(kh("aliases", "create", k["id"], "wrap"), 1)
    ok(kh("aliases", "delete", k["id"], a))
    fails(kh("keys", "show", a), 2)


def test_key_and_instance_policies(kh):
    k = root_key(kh)
    pol = ok(kh("policies", "set-rotation", k["id"], "--months", "3", "-o", "json")).json()
    assert pol[0]["rotation"]["interval_month"] == 3
    ok(kh("policies", "set-dual-auth", k["id"], "--enabled", "false"))
    shown = ok(kh("policies", "show", k["id"], "-o", "json")).json()
    assert any("rotation" in p for p in shown)
    fails(kh("policies", "set-rotation", k["id"], "--months", "13"), 1, "INVALID_FIELD_ERR")
    ok(kh("policies", "set-instance", "metrics", '{"enabled":true}'))
    inst = ok(kh("policies", "instance", "-o", "json")).json()
    assert any(p["policy_type"] == "metrics" for p in inst)
    fails(kh("policies", "set-instance", "metrics", "not json"), 1, "not JSON")


def test_profiles(kh, server, tmp_path):
    key_file = tmp_path / "apikey"
    key_file.write_text(server.apikey + "\n")
    ok(kh("profiles", "add", "local", "--url", server.url, "--instance", server.instance_id,
          "--apikey-file", key_file, dev=False))
    ok(kh("profiles", "add", "dev", "--dev-json", server.data_dir / "dev.json", "--default", dev=False))
    text = kh.config.read_text()
    assert server.apikey not in text, "profiles store a key file path, not the key"
    assert stat.S_IMODE(kh.config.stat().st_mode) == 0o600
    listed = ok(kh("profiles", "list", "-o", "json", dev=False)).json()
    assert {p["name"] for p in listed} >= {"local", "dev"}
    assert [p["name"] for p in listed if p["default"]] == ["dev"]
    ok(kh("keys", "list", dev=False))  # the default profile
    ok(kh("keys", "list", "--profile", "local", dev=False))
    fails(kh("keys", "list", "--profile", "nope", dev=False), 1, "no profile")
    ok(kh("profiles", "use", "local", dev=False))
    ok(kh("keys", "list", dev=False))
    ok(kh("profiles", "remove", "local", dev=False))
    ok(kh("profiles", "remove", "dev", dev=False))
    fails(kh("profiles", "remove", "dev", dev=False), 1)


# -- encrypt / decrypt ---------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 300_000])
def test_encrypt_decrypt_round_trip(kh, tmp_path, size):
    k = root_key(kh, aliases=[uniq("enc")])
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(size))
    enc = tmp_path / "in.khe"
    r = ok(kh("encrypt", "--key", k["aliases"][0], src, enc, "-o", "json")).json()
    assert r["bytes"] == size and r["keyId"] == k["id"]
    assert enc.read_bytes()[:8] == b"KEYHOLD\0"
    out = tmp_path / "out.bin"
    ok(kh("decrypt", enc, out))
    assert out.read_bytes() == src.read_bytes()


def test_encrypt_decrypt_pipes(kh):
    k = root_key(kh)
    data = os.urandom(200_000)
    enc = ok(kh("encrypt", "--key", k["id"], "-", "-", stdin=data)).raw
    assert enc[:8] == b"KEYHOLD\0"
    assert ok(kh("decrypt", "-", "-", stdin=enc)).raw == data


def test_files_from_before_a_rotation_decrypt(kh, tmp_path):
    k = root_key(kh)
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(100_000))
    enc = tmp_path / "old.khe"
    ok(kh("encrypt", "--key", k["id"], src, enc))
    ok(kh("keys", "rotate", k["id"]))
    ok(kh("keys", "rotate", k["id"]))
    out = tmp_path / "out.bin"
    ok(kh("decrypt", enc, out))
    assert out.read_bytes() == src.read_bytes()


def test_disabled_key_stops_decryption(kh, tmp_path):
    k = root_key(kh)
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(10_000))
    enc = tmp_path / "f.khe"
    ok(kh("encrypt", "--key", k["id"], src, enc))
    ok(kh("keys", "disable", k["id"]))
    out = tmp_path / "out.bin"
    r = fails(kh("decrypt", enc, out), 4, "suspended", "keyhold keys enable", k["id"])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    fails(kh("encrypt", "--key", k["id"], src, tmp_path / "g.khe"), 4, "KEY_ACTION_INVALID_STATE_ERR")
    ok(kh("keys", "enable", k["id"]))
    ok(kh("decrypt", enc, out))
    assert out.read_bytes() == src.read_bytes()
    del r


def test_deleted_key_stops_decryption(kh, tmp_path):
    k = root_key(kh)
    src = tmp_path / "in.bin"
    src.write_bytes(b"secret")
    enc = tmp_path / "f.khe"
    ok(kh("encrypt", "--key", k["id"], src, enc))
    ok(kh("keys", "delete", k["id"]))
    fails(kh("decrypt", enc, tmp_path / "o"), 4, "deleted", "keyhold keys restore")


def test_reader_may_decrypt_but_wrong_instance_may_not(kh, server, tmp_path):
    k = root_key(kh)
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(5000))
    enc = tmp_path / "f.khe"
    ok(kh("encrypt", "--key", k["id"], src, enc))
    out = tmp_path / "out.bin"
    ok(kh("decrypt", enc, out, apikey=server.service_apikey))
    assert out.read_bytes() == src.read_bytes()
    fails(kh("decrypt", enc, tmp_path / "o2", "--instance", str(uuid.uuid4())), 3)


SEG = 65536 + 16


def encrypted(kh, tmp_path, size=3 * 65536 + 1000):
    k = root_key(kh)
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(size))
    enc = tmp_path / "f.khe"
    ok(kh("encrypt", "--key", k["id"], src, enc))
    data = enc.read_bytes()
    hlen = len(data) - (size + 4 * 16)
    return data, hlen


@pytest.mark.parametrize("how", ["truncate-boundary", "truncate-mid", "reorder", "duplicate",
                                 "bitflip", "header-key-id", "drop-all"])
def test_tampered_files_are_refused(kh, tmp_path, how):
    data, h = encrypted(kh, tmp_path)
    seg = lambda i: data[h + i * SEG:h + (i + 1) * SEG]  # noqa: E731
    if how == "truncate-boundary":
        bad = data[:h + 3 * SEG]
    elif how == "truncate-mid":
        bad = data[:h + SEG + 100]
    elif how == "reorder":
        bad = data[:h] + seg(1) + seg(0) + data[h + 2 * SEG:]
    elif how == "duplicate":
        bad = data[:h] + seg(0) + seg(1) + seg(1) + data[h + 2 * SEG:]
    elif how == "bitflip":
        b = bytearray(data)
        b[h + SEG + 12345] ^= 0x20
        bad = bytes(b)
    elif how == "header-key-id":
        # Another valid key's id in the header: the DEK does not unwrap under it.
        other = root_key(kh)["id"].encode()
        start = 8 + 1 + 1 + 4 + 7 + 2  # magic, version, algorithm, segment size, prefix, length
        bad = data[:start] + other + data[start + len(other):]
    else:
        bad = data[:h]
    f = tmp_path / "bad.khe"
    f.write_bytes(bad)
    out = tmp_path / "out.bin"
    r = kh("decrypt", f, out)
    assert r.rc in (1, 4), r
    assert r.err.startswith("keyhold: error:")
    assert any(w in r.err for w in ("failed authentication", "truncated", "refused", "UNPROCESSABLE")), r.err
    assert not out.exists(), "nothing is left behind when a file is refused"


def test_not_a_keyhold_file(kh, tmp_path):
    f = tmp_path / "plain.txt"
    f.write_bytes(b"hello world, not encrypted at all")
    fails(kh("decrypt", f, tmp_path / "o"), 1, "not a Keyhold encrypted file")


def test_encrypt_errors(kh, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"x")
    fails(kh("encrypt", "--key", "no-such-key", src, tmp_path / "o"), 2, "KEY_NOT_FOUND_ERR")
    fails(kh("encrypt", "--key", "k", tmp_path / "missing", tmp_path / "o"), 1, "missing")
    assert not (tmp_path / "o").exists()


def test_device_output_is_written_in_place(kh, tmp_path):
    k = root_key(kh)
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(1000))
    ok(kh("encrypt", "--key", k["id"], src, "/dev/null"))
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_dual_authorization_delete(kh, server):
    k = root_key(kh)
    ok(kh("policies", "set-dual-auth", k["id"], "--enabled", "true"))
    fails(kh("keys", "delete", k["id"]), 4, "AUTHORIZATIONS_NOT_MET")
    ok(kh("keys", "approve-deletion", k["id"], apikey=server.second_apikey))
    ok(kh("keys", "cancel-deletion", k["id"], apikey=server.second_apikey))
    fails(kh("keys", "delete", k["id"]), 4, "AUTHORIZATIONS_NOT_MET")
    r = ok(kh("keys", "approve-deletion", k["id"], apikey=server.second_apikey))
    assert "another user" in r.out
    ok(kh("keys", "delete", k["id"]))
    plain = root_key(kh)
    fails(kh("keys", "approve-deletion", plain["id"]), 4, "NOT_DUAL_AUTH_ERR")


def test_registrations_and_sync(kh):
    k = root_key(kh)
    assert ok(kh("keys", "registrations", k["id"], "-o", "json")).json() == []
    assert "(none)" in ok(kh("keys", "registrations", k["id"])).out
    ok(kh("keys", "sync", k["id"]))


def test_create_with_policy_overrides(kh):
    k = ok(kh("keys", "create", uniq("ovr"), "--rotation-months", "4", "--dual-auth-delete", "true",
              "-o", "json")).json()
    pols = ok(kh("policies", "show", k["id"], "-o", "json")).json()
    assert any(p.get("rotation", {}).get("interval_month") == 4 for p in pols), pols
    assert any(p.get("dualAuthDelete", {}).get("enabled") is True for p in pols), pols
    fails(kh("keys", "create", uniq("ovr"), "--standard", "--rotation-months", "4"), 1, "KEY_ROOT_REQ_ERR")
