"""IAM over real HTTP: users, service IDs, access groups, API keys (secret shown once,
rotate, delete stops new tokens and refresh), access policies (strict validation,
cascade on delete), and refused tokens (expired, tampered, unknown kid, another
deployment's) on Key Protect and IAM routes."""
import json
import time

import pytest
import requests

from api_helpers import (APIKEY_GRANT, assert_kp_error, b64url_decode, b64url_encode,
                         uniq)

SR = "crn:v1:bluemix:public:iam::::serviceRole:"
PR = "crn:v1:bluemix:public:iam::::role:"


def iam(server, method, path, token, body=None, params=None):
    h = {"Authorization": "Bearer " + token} if token else {}
    if isinstance(body, bytes):
        return requests.request(method, server.url + path, data=body, headers=h, params=params, timeout=30)
    return requests.request(method, server.url + path, json=body, headers=h, params=params, timeout=30)


def assert_iam_error(r, status):
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"errorCode", "errorMessage", "context"}, body
    assert body["errorCode"].startswith("BXNIM") and body["errorMessage"]
    assert body["context"]["requestId"]


def token_resp(server, **form):
    return requests.post(server.url + "/identity/token", data=form, timeout=30)


def apikey_token(server, apikey):
    r = token_resp(server, grant_type=APIKEY_GRANT, apikey=apikey)
    return r


def policy(subject, roles, account="dev-account", **res):
    attrs = [{"name": "accountId", "value": account}]
    for k, v in res.items():
        attrs.append({"name": k, "value": v})
    name = "access_group_id" if subject.startswith("AccessGroupId-") else "iam_id"
    return {"type": "access", "subjects": [{"attributes": [{"name": name, "value": subject}]}],
            "roles": [{"role_id": r} for r in roles], "resources": [{"attributes": attrs}]}


@pytest.fixture(scope="module")
def admin(server):
    return server.token()


def test_whoami(server, admin):
    r = iam(server, "GET", "/v1/whoami", admin)
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["iam_id"] == "dev-admin" and me["account_id"] == "dev-account" and me["iam_admin"]
    assert "Administrator" in me["platform_roles"]
    svc = iam(server, "GET", "/v1/whoami", server.token(server.service_apikey)).json()
    assert svc["type"] == "service" and not svc["iam_admin"] and svc["platform_roles"] == []


def test_user_and_api_key_lifecycle(server, admin):
    u = iam(server, "POST", "/v1/users", admin, {"user_id": "alice@example.com"})
    assert u.status_code == 201, u.text
    alice = u.json()["iam_id"]
    assert any(x["iam_id"] == alice for x in iam(server, "GET", "/v1/users", admin).json()["resources"])
    created = iam(server, "POST", "/v1/apikeys", admin, {"name": "alice-key", "iam_id": alice})
    assert created.status_code == 201, created.text
    k = created.json()
    secret, kid = k["apikey"], k["id"]
    assert secret.startswith("kh_") and k["iam_id"] == alice
    # The secret is never shown again: not by get, not by list.
    got = iam(server, "GET", f"/v1/apikeys/{kid}", admin)
    assert got.status_code == 200 and "apikey" not in got.json() and secret not in got.text
    listed = iam(server, "GET", "/v1/apikeys", admin, params={"iam_id": alice})
    assert [x["id"] for x in listed.json()["apikeys"]] == [kid] and secret not in listed.text

    t = apikey_token(server, secret)
    assert t.status_code == 200, t.text
    refresh = t.json()["refresh_token"]
    alice_token = t.json()["access_token"]
    # Alice has no policy yet: Key Protect refuses her; she may see her own identity and keys.
    r = requests.get(server.url + "/api/v2/keys", headers={"Authorization": "Bearer " + alice_token,
                                                          "Bluemix-Instance": server.instance_id}, timeout=30)
    assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)
    assert iam(server, "GET", "/v1/apikeys", alice_token).json()["apikeys"][0]["id"] == kid
    assert_iam_error(iam(server, "GET", "/v1/users", alice_token), 403)
    assert_iam_error(iam(server, "POST", "/v1/apikeys", alice_token, {"name": "x", "iam_id": "dev-admin"}), 403)
    assert_iam_error(iam(server, "GET", "/v1/apikeys", alice_token, params={"iam_id": "dev-admin"}), 403)

    # Rotate: a new secret; the old one stops working, and so do refresh tokens issued for it.
    rot = iam(server, "POST", f"/v1/apikeys/{kid}/rotate", alice_token)
    assert rot.status_code == 200, rot.text
    new_secret = rot.json()["apikey"]
    assert new_secret != secret and rot.json()["id"] == kid
    assert_iam_error(apikey_token(server, secret), 400)
    assert_iam_error(token_resp(server, grant_type="refresh_token", refresh_token=refresh), 400)
    t2 = apikey_token(server, new_secret)
    assert t2.status_code == 200
    refresh2 = t2.json()["refresh_token"]
    r2 = token_resp(server, grant_type="refresh_token", refresh_token=refresh2)
    assert r2.status_code == 200, r2.text

    # Delete: no new tokens, by API key or by refresh.
    assert iam(server, "DELETE", f"/v1/apikeys/{kid}", admin).status_code == 204
    assert_iam_error(apikey_token(server, new_secret), 400)
    assert_iam_error(token_resp(server, grant_type="refresh_token", refresh_token=refresh2), 400)
    assert_iam_error(iam(server, "GET", f"/v1/apikeys/{kid}", admin), 404)
    assert_iam_error(iam(server, "DELETE", f"/v1/apikeys/{kid}", admin), 404)


def test_own_api_keys_without_admin(server, admin):
    sid = iam(server, "POST", "/v1/serviceids", admin, {"name": uniq("svc"), "description": "ci"}).json()
    k = iam(server, "POST", "/v1/apikeys", admin, {"name": "first", "iam_id": sid["iam_id"]}).json()
    tok = apikey_token(server, k["apikey"]).json()["access_token"]
    mine = iam(server, "POST", "/v1/apikeys", tok, {"name": "second"})
    assert mine.status_code == 201 and mine.json()["iam_id"] == sid["iam_id"]
    assert apikey_token(server, mine.json()["apikey"]).status_code == 200
    assert {x["id"] for x in iam(server, "GET", "/v1/apikeys", tok).json()["apikeys"]} == {k["id"], mine.json()["id"]}
    # Another principal's key is not theirs to read or delete.
    admin_keys = iam(server, "GET", "/v1/apikeys", admin, params={"iam_id": "dev-admin"}).json()["apikeys"]
    assert admin_keys
    assert_iam_error(iam(server, "DELETE", f"/v1/apikeys/{admin_keys[0]['id']}", tok), 403)
    assert iam(server, "DELETE", f"/v1/apikeys/{mine.json()['id']}", tok).status_code == 204


def test_deleting_a_service_id_removes_its_keys_memberships_and_policies(server, admin):
    sid = iam(server, "POST", "/v1/serviceids", admin, {"name": uniq("svc")}).json()["iam_id"]
    k = iam(server, "POST", "/v1/apikeys", admin, {"name": "k", "iam_id": sid}).json()
    g = iam(server, "POST", "/v2/groups", admin, {"name": uniq("grp"), "description": "readers"})
    assert g.status_code == 201, g.text
    gid = g.json()["id"]
    m = iam(server, "PUT", f"/v2/groups/{gid}/members", admin, {"members": [{"iam_id": sid, "type": "service"}]})
    assert m.status_code == 200 and [x["iam_id"] for x in m.json()["members"]] == [sid]
    p = iam(server, "POST", "/v1/policies", admin, policy(gid, [SR + "Reader"], serviceName="kms",
                                                         serviceInstance=server.instance_id))
    assert p.status_code == 201, p.text
    tok = apikey_token(server, k["apikey"]).json()["access_token"]
    hdr = {"Authorization": "Bearer " + tok, "Bluemix-Instance": server.instance_id}
    # Reader through the group: list yes, create no.
    assert requests.get(server.url + "/api/v2/keys", headers=hdr, timeout=30).status_code == 200
    r = requests.post(server.url + "/api/v2/keys", headers=hdr, timeout=30, json={
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "x"}]})
    assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)
    # Removing the member takes the access away at once.
    assert iam(server, "DELETE", f"/v2/groups/{gid}/members/{sid}", admin).status_code == 204
    assert requests.get(server.url + "/api/v2/keys", headers=hdr, timeout=30).status_code == 401
    iam(server, "PUT", f"/v2/groups/{gid}/members", admin, {"members": [{"iam_id": sid}]})
    assert requests.get(server.url + "/api/v2/keys", headers=hdr, timeout=30).status_code == 200
    # Deleting the service ID: its keys, memberships (and with the group, the policy) go.
    assert iam(server, "DELETE", f"/v1/serviceids/{sid}", admin).status_code == 204
    assert_iam_error(apikey_token(server, k["apikey"]), 400)
    assert requests.get(server.url + "/api/v2/keys", headers=hdr, timeout=30).status_code == 401
    assert iam(server, "GET", f"/v2/groups/{gid}/members", admin).json()["members"] == []
    assert iam(server, "DELETE", f"/v2/groups/{gid}", admin).status_code == 204
    assert_iam_error(iam(server, "GET", f"/v1/policies/{p.json()['id']}", admin), 404)
    assert_iam_error(iam(server, "GET", f"/v1/serviceids/{sid}", admin), 404)


@pytest.mark.parametrize("mutate, why", [
    (lambda p: p.update(type="authorization"), "type"),
    (lambda p: p["roles"].append({"role_id": SR + "Owner"}), "unknown role"),
    (lambda p: p["roles"].clear(), "no roles"),
    (lambda p: p["roles"].append({"role_id": "Reader"}), "not a CRN"),
    (lambda p: p["resources"][0]["attributes"].append({"name": "region", "value": "x"}), "unknown attribute"),
    (lambda p: p["resources"][0]["attributes"].append({"name": "serviceName", "value": "cloud-object-storage"}), "service"),
    (lambda p: p["resources"][0]["attributes"].append({"name": "resourceType", "value": "key"}), "resourceType alone"),
    (lambda p: p["resources"][0]["attributes"].__setitem__(0, {"name": "accountId", "value": "other"}), "other account"),
    (lambda p: p["subjects"][0]["attributes"].__setitem__(0, {"name": "iam_id", "value": "nobody"}), "unknown subject"),
    (lambda p: p["subjects"][0]["attributes"].__setitem__(0, {"name": "email", "value": "x"}), "subject attribute"),
    (lambda p: p.update(extra=1), "unknown field"),
    (lambda p: p.update(resources=[]), "no resource"),
])
def test_policy_validation(server, admin, mutate, why):
    p = policy("dev-service", [SR + "Reader"])
    mutate(p)
    r = iam(server, "POST", "/v1/policies", admin, p)
    assert_iam_error(r, 400)


def test_platform_roles_not_on_keys_and_admin_only(server, admin):
    p = policy("dev-service", [PR + "Administrator"], serviceName="kms", serviceInstance=server.instance_id,
               resourceType="key-ring", resource="default")
    assert_iam_error(iam(server, "POST", "/v1/policies", admin, p), 400)
    svc = server.token(server.service_apikey)
    assert_iam_error(iam(server, "POST", "/v1/policies", svc, policy("dev-service", [SR + "Manager"])), 403)
    assert_iam_error(iam(server, "GET", "/v1/policies", svc), 403)
    assert_iam_error(iam(server, "POST", "/v1/users", admin, {"user_id": "x", "admin": True}), 400)
    assert_iam_error(iam(server, "POST", "/v1/users", admin, b"not json"), 400)
    assert_iam_error(iam(server, "POST", "/v1/users", admin, {"user_id": ""}), 400)


def test_policy_roundtrip_and_filter(server, admin):
    p = policy("dev-service", [SR + "Writer", "crn:v1:bluemix:public:kms::::serviceRole:KeyPurge"],
               serviceName="kms", serviceInstance=server.instance_id)
    r = iam(server, "POST", "/v1/policies", admin, p)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["type"] == "access" and {x["role_id"] for x in body["roles"]} == {SR + "Writer", SR + "KeyPurge"}
    got = iam(server, "GET", f"/v1/policies/{body['id']}", admin).json()
    assert got == body
    listed = iam(server, "GET", "/v1/policies", admin, params={"iam_id": "dev-service"}).json()["policies"]
    assert body["id"] in [x["id"] for x in listed]
    assert iam(server, "DELETE", f"/v1/policies/{body['id']}", admin).status_code == 204


# ---- refused tokens: expired, tampered, unknown key, another deployment ----

def kp_get(server, token):
    return requests.get(server.url + "/api/v2/keys", timeout=30,
                        headers={"Authorization": "Bearer " + token, "Bluemix-Instance": server.instance_id})


def forge(token, header=None, claims=None):
    h, c, s = token.split(".")
    hd, cd = json.loads(b64url_decode(h)), json.loads(b64url_decode(c))
    hd.update(header or {})
    cd.update(claims or {})
    return ".".join([b64url_encode(json.dumps(hd).encode()), b64url_encode(json.dumps(cd).encode()), s])


def test_tampered_and_unknown_kid_tokens_are_refused(server):
    good = server.token(fresh=True)
    assert kp_get(server, good).status_code == 200
    for bad in [forge(good, claims={"sub": "dev-admin-2"}), forge(good, claims={"account": {"bss": "other"}}),
                forge(good, header={"kid": "someone-elses-key"}), forge(good, header={"alg": "none"}),
                good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"), "garbage", ""]:
        assert_kp_error(kp_get(server, bad), (400, 401), reasons_optional=True)
        assert_iam_error(iam(server, "GET", "/v1/whoami", bad), 401)


def test_expired_and_foreign_tokens_are_refused(server, server_factory):
    short = server_factory(extra=["--token-lifetime", "1"])
    t = short.token(fresh=True)
    assert kp_get(short, t).status_code == 200
    time.sleep(2.1)
    assert_kp_error(kp_get(short, t), 401, "UNAUTHORIZED_ERR", reasons_optional=True)
    assert_iam_error(iam(short, "GET", "/v1/whoami", t), 401)
    # A token of another deployment (another signing key, the same account name) is refused here.
    foreign = short.token(fresh=True)
    assert_kp_error(kp_get(server, foreign), 401, "UNAUTHORIZED_ERR", reasons_optional=True)
    assert_iam_error(iam(server, "GET", "/v1/whoami", foreign), 401)
    # And an API key of the other deployment gets no token here.
    assert_iam_error(apikey_token(server, short.apikey), 400)


# ---- keyhold init: a non-dev deployment and its first administrator ----

def _run(args, env=None):
    import os
    import subprocess
    from api_helpers import keyhold_bin
    return subprocess.run([keyhold_bin(), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _serve_initialised(data_dir):
    """`serve` without --dev: ceremony master key (sealed; IAM still works), or the
    HSM's key when the suite runs with the PKCS#11 unit."""
    import os
    import subprocess
    from api_helpers import keyhold_bin
    args = [keyhold_bin(), "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]
    if os.environ.get("KEYHOLD_CRYPTO_UNIT") != "pkcs11":
        args += ["--master-key", "ceremony"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line, "server printed nothing (refused to start?)"
    return proc, json.loads(line)


def test_init_then_serve_without_dev(tmp_path):
    d = tmp_path / "prod"
    r = _run(["init", "--data-dir", str(d)])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"account_id", "iam_id", "apikey_id", "apikey"} and out["apikey"].startswith("kh_")
    assert out["apikey"] not in r.stderr
    again = _run(["init", "--data-dir", str(d)])
    assert again.returncode == 4 and "already initialised" in again.stderr and "kh_" not in again.stdout
    # A dev server refuses an initialised store.
    dev = _run(["serve", "--dev", "--data-dir", str(d), "--listen", "127.0.0.1:0"])
    assert dev.returncode != 0 and "keyhold init" in dev.stderr
    proc, info = _serve_initialised(d)
    try:
        assert info["account_id"] == out["account_id"]

        class S:
            url = info["url"]
        t = token_resp(S, grant_type=APIKEY_GRANT, apikey=out["apikey"])
        assert t.status_code == 200, t.text
        tok = t.json()["access_token"]
        me = iam(S, "GET", "/v1/whoami", tok).json()
        assert me == {"iam_id": out["iam_id"], "type": "user", "account_id": out["account_id"],
                      "iam_admin": True, "platform_roles": ["Administrator"]}
        pols = iam(S, "GET", "/v1/policies", tok).json()["policies"]
        assert {r["role_id"] for p in pols for r in p["roles"]} == {
            PR + "Administrator", SR + "Manager", SR + "KeyPurge"}
        sid = iam(S, "POST", "/v1/serviceids", tok, {"name": "app"}).json()["iam_id"]
        k = iam(S, "POST", "/v1/apikeys", tok, {"name": "app", "iam_id": sid}).json()["apikey"]
        app = token_resp(S, grant_type=APIKEY_GRANT, apikey=k).json()["access_token"]
        assert_iam_error(iam(S, "GET", "/v1/users", app), 403)
        # Policies name this account only.
        assert_iam_error(iam(S, "POST", "/v1/policies", tok, policy(sid, [SR + "Reader"])), 400)
        assert iam(S, "POST", "/v1/policies", tok, policy(sid, [SR + "Reader"], account=out["account_id"])).status_code == 201
    finally:
        proc.terminate()
        proc.wait(15)


def test_serve_without_dev_needs_init(tmp_path):
    r = _run(["serve", "--data-dir", str(tmp_path / "fresh"), "--listen", "127.0.0.1:0", "--master-key", "ceremony"])
    assert r.returncode != 0 and "keyhold init" in r.stderr
