"""Secrets never leave where they belong (DESIGN §2): root key material is never returned, and no
key material, DEK, API key or token appears in any response body of an error or in the server log,
even at the most verbose log level."""
import os

from api_helpers import b64, check_status, unb64


def _walk(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + "/" + k, k, v
            yield from _walk(v, path + "/" + k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")


def test_no_secrets_in_responses_or_logs(server_factory):
    srv = server_factory(env={"RUST_LOG": "trace", "KEYHOLD_LOG": "trace"})
    c = srv.client()
    material = os.urandom(32)
    dek = os.urandom(32)
    std_material = os.urandom(64)
    responses = []

    def keep(r):
        responses.append(r)
        return r

    root = check_status(keep(c.create_key_resp(payload=b64(material), prefer="return=representation")), 201).json()["resources"][0]
    kid = root["id"]
    std = check_status(c.create_key_resp(extractable=True, payload=b64(std_material)), 201).json()["resources"][0]
    w = check_status(keep(c.wrap_resp(kid, dek, aad=["a"])), 200).json()
    keep(c.unwrap_resp(kid, w["ciphertext"], aad=["b"]))              # error: wrong AAD
    keep(c.unwrap_resp(kid, w["ciphertext"][:-8], aad=["a"]))         # error: truncated
    keep(c.wrap_resp(kid, dek + os.urandom(7500)))                    # error: too large
    keep(c.action(kid, "rotate"))                                     # error: payload required
    new_material = os.urandom(32)
    keep(c.action(kid, "rotate", {"payload": b64(new_material)}))
    keep(c.action(kid, "rotate", {"payload": b64(os.urandom(17))}))   # error: bad size
    for path in (f"/api/v2/keys/{kid}", f"/api/v2/keys/{kid}/metadata", f"/api/v2/keys/{kid}/versions"):
        keep(c.get(path))
    keep(c.delete(f"/api/v2/keys/{kid}", headers={"Prefer": "return=representation"}))
    keep(c.post(f"/api/v2/keys/{kid}/restore"))
    keep(c.patch(f"/api/v2/keys/{kid}", {"keyRingID": "default"}))
    u = check_status(keep(c.unwrap_resp(kid, w["ciphertext"], aad=["a"])), 200).json()
    assert unb64(u["plaintext"]) == dek

    # 1. a root key's material is never returned
    for r in responses:
        if not r.content:
            continue
        body = r.json()
        for where, k, v in _walk(body):
            if k == "payload":
                assert False, f"root key response carries a payload at {where}: {r.request.method} {r.request.url}"
        text = r.text
        for secret in (material, new_material):
            assert b64(secret) not in text, f"root key material in {r.request.method} {r.request.url}"
        if r.status_code >= 400:
            assert b64(dek) not in text, "a DEK echoed in an error"
            assert b64(dek)[:20] not in text, "a DEK echoed in an error"

    # 2. nothing secret in the log
    srv.stop()
    log = srv.log_path.read_text(errors="replace")
    assert log, "expected some log output"
    secrets = {
        "root key material": [b64(material), b64(new_material), material.hex(), new_material.hex()],
        "standard key material": [b64(std_material), std_material.hex()],
        "DEK": [b64(dek), dek.hex()],
        "API key": [srv.apikey, srv.second_apikey, srv.service_apikey],
        "access token": [t.split(".")[2] for t in srv._tokens.values()],
    }
    leaks = [f"{what}: {s[:12]}…" for what, vals in secrets.items() for s in vals if s and s in log]
    assert not leaks, f"secrets in the server log ({srv.log_path}): {leaks}"
    assert std["id"]


def test_key_material_not_stored_in_clear(server_factory):
    """Stored key material is wrapped by the master key (DESIGN §2): neither an imported root key,
    a standard key, nor a DEK appears in clear anywhere in the data directory (SQLite file, WAL, …)."""
    srv = server_factory()
    c = srv.client()
    root_m, std_m, dek = os.urandom(32), os.urandom(48), os.urandom(32)
    rk = check_status(c.create_key_resp(payload=b64(root_m)), 201).json()["resources"][0]
    check_status(c.create_key_resp(extractable=True, payload=b64(std_m)), 201)
    gen = c.standard_key()
    gen_m = unb64(gen["payload"])
    c.wrap(rk["id"], dek)
    c.rotate(rk["id"], {"payload": b64(os.urandom(32))})
    srv.kill()  # no chance to tidy up: whatever is on disk now is what an attacker with the disk gets
    needles = {"imported root key": root_m, "imported standard key": std_m, "generated standard key": gen_m,
               "DEK": dek}
    found = []
    for f in srv.data_dir.rglob("*"):
        if not f.is_file():
            continue
        data = f.read_bytes()
        for what, m in needles.items():
            for form in (m, b64(m).encode(), m.hex().encode()):
                if form in data:
                    found.append(f"{what} in {f.name}")
    assert not found, found
    mode = srv.data_dir.stat().st_mode & 0o077
    assert mode & 0o002 == 0, "data dir must not be world-writable"
    for f in srv.data_dir.rglob("*"):
        assert f.stat().st_mode & 0o002 == 0, f"{f} is world-writable"
