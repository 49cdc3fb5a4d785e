"""DESIGN §1's five steps over HTTP, as a user would take them: provision a crypto instance
(hs-crypto), look it up, read its connection info (§10.1), provision a key-management
instance (kms) bound to it, authorize kms → hs-crypto (Reader); then wrap/unwrap a DEK
through the new kms instance. Without the authorization every key operation is refused
with 403 CRYPTO_INSTANCE_AUTHORIZATION_ERR; deleting the crypto instance in use is 409."""
import os
import re
from urllib.parse import urlsplit

import pytest

from api_helpers import UUID_RE, assert_kp_error, b64, check_status, uniq, unb64
from rc_helpers import authorize, create_instance, create_root_key, eventually, hs_crypto, kms, on, rc

CRN_RE = re.compile(r"^crn:v1:keyhold:private:(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]+):a/(?P<account>[^:]+):(?P<guid>[0-9a-f-]{36})::$")


def wrap(c, inst, kid, dek, aad=("bucket-1",)):
    return on(c, inst, "POST", f"/api/v2/keys/{kid}/actions/wrap", {"plaintext": b64(dek), "aad": list(aad)})


def unwrap(c, inst, kid, ct, aad=("bucket-1",)):
    return on(c, inst, "POST", f"/api/v2/keys/{kid}/actions/unwrap", {"ciphertext": ct, "aad": list(aad)})


def test_five_steps_then_envelope_encryption(server, kp):
    # 1. Provision a crypto instance with two crypto units.
    name = uniq("crypto")
    hs = create_instance(kp, name=name, resource_plan_id="hs-crypto-standard", parameters={"units": 2})
    assert UUID_RE.match(hs["guid"]), hs
    m = CRN_RE.match(hs["crn"])
    assert m and m["service"] == "hs-crypto" and m["guid"] == hs["guid"], hs
    assert hs["id"] == hs["crn"] and hs["state"] == "active" and hs["name"] == name
    assert hs["resource_plan_id"] == "hs-crypto-standard" and hs["parameters"] == {"units": 2}
    assert hs["created_at"].endswith("Z")

    # 2. Look up its id by name, and read it back by guid and by CRN.
    r = check_status(rc(kp, "GET", "/v2/resource_instances", params={"resource_id": "hs-crypto", "name": name}), 200)
    found = r.json()["resources"]
    assert [i["guid"] for i in found] == [hs["guid"]] and r.json()["rows_count"] == 1
    hs_id = found[0]["guid"]
    assert check_status(rc(kp, "GET", f"/v2/resource_instances/{hs_id}"), 200).json() == hs
    crn_path = hs["crn"].replace(":", "%3A").replace("/", "%2F")
    assert check_status(rc(kp, "GET", f"/v2/resource_instances/{crn_path}"), 200).json()["guid"] == hs_id

    # 3. Connection info (§10.1): exactly instance_id, kms and ep11; host[:port], no scheme.
    host = urlsplit(server.url).netloc
    for v in ("crypto_v1", "crypto_v2"):
        info = check_status(rc(kp, "GET", f"/{v}/instances/{hs_id}"), 200).json()
        assert set(info) == {"instance_id", "kms", "ep11"}, info
        assert info["instance_id"] == hs_id
        assert set(info["kms"]) == {"public", "private"} and set(info["ep11"]) == {"public", "private"}
        assert info["kms"]["public"] == host, info
        assert "://" not in info["kms"]["private"] and info["kms"]["private"]

    # 4. Provision a kms instance bound to the crypto instance (dedicated, KYOK), by CRN.
    k = kms(kp, crypto=hs["crn"])
    assert k["resource_plan_id"] == "kms-dedicated" and k["plan"] == "dedicated"
    assert k["parameters"] == {"crypto_instance": hs_id}
    kid_inst = k["guid"]

    # Before the authorization: every key operation is refused, naming the crypto instance.
    for method, path, body in (("GET", "/api/v2/keys", None), ("POST", "/api/v2/keys", {"x": 1}),
                               ("GET", "/api/v2/key_rings", None)):
        r = on(kp, kid_inst, method, path, body)
        res = assert_kp_error(r, 403, "CRYPTO_INSTANCE_AUTHORIZATION_ERR")
        assert hs_id in res["reasons"][0]["message"]

    # 5. Authorize kms (this instance) → hs-crypto (this instance) with Reader.
    auth = authorize(kp, {"service_name": "kms", "instance_id": kid_inst},
                     {"service_name": "hs-crypto", "instance_id": hs_id})
    assert UUID_RE.match(auth["id"]) and auth["roles"] == ["Reader"]
    assert check_status(rc(kp, "GET", f"/v1/authorizations/{auth['id']}"), 200).json() == auth
    listed = check_status(rc(kp, "GET", "/v1/authorizations"), 200).json()["authorizations"]
    assert auth in listed

    # Then: a root key in the new instance, and a DEK wrapped and unwrapped through it.
    root = create_root_key(kp, kid_inst)
    dek = os.urandom(32)
    ct = check_status(wrap(kp, kid_inst, root["id"], dek), 200).json()["ciphertext"]
    assert unb64(check_status(unwrap(kp, kid_inst, root["id"], ct), 200).json()["plaintext"]) == dek
    # The key lives in the new instance only.
    assert on(kp, server.instance_id, "GET", f"/api/v2/keys/{root['id']}").status_code == 404

    # Removing the authorization refuses wrap (within the 1 s cache bound) with the reason.
    check_status(rc(kp, "DELETE", f"/v1/authorizations/{auth['id']}"), 204)
    r = eventually(lambda: (lambda r: r if r.status_code == 403 else None)(wrap(kp, kid_inst, root["id"], dek)))
    assert r is not None, "wrap still allowed 1 s after the authorization was removed"
    assert_kp_error(r, 403, "CRYPTO_INSTANCE_AUTHORIZATION_ERR")
    assert_kp_error(unwrap(kp, kid_inst, root["id"], ct), 403, "CRYPTO_INSTANCE_AUTHORIZATION_ERR")
    assert rc(kp, "GET", f"/v1/authorizations/{auth['id']}").status_code == 404

    # Restoring it (this time service-wide on the source side) restores service.
    auth2 = authorize(kp, {"service_name": "kms"}, {"service_name": "hs-crypto", "instance_id": hs_id})
    r = eventually(lambda: (lambda r: r if r.status_code == 200 else None)(unwrap(kp, kid_inst, root["id"], ct)))
    assert r is not None and unb64(r.json()["plaintext"]) == dek

    # Deleting the crypto instance in use: 409, nothing changed.
    r = rc(kp, "DELETE", f"/v2/resource_instances/{hs_id}")
    res = assert_kp_error(r, 409, "INSTANCE_IN_USE_ERR")
    assert kid_inst in res["reasons"][0]["message"]
    assert check_status(rc(kp, "GET", f"/v2/resource_instances/{hs_id}"), 200).json()["state"] == "active"
    check_status(wrap(kp, kid_inst, root["id"], dek), 200)

    # A kms instance holding keys is not deleted without force either.
    assert_kp_error(rc(kp, "DELETE", f"/v2/resource_instances/{kid_inst}"), 409, "INSTANCE_IN_USE_ERR")
    check_status(wrap(kp, kid_inst, root["id"], dek), 200)
    # With force it is kept pending reclamation (keys kept), and no longer serves keys.
    r = check_status(rc(kp, "DELETE", f"/v2/resource_instances/{kid_inst}", params={"force": "true"}), 202)
    assert r.json()["state"] == "pending_reclamation"
    assert_kp_error(wrap(kp, kid_inst, root["id"], dek), 401, None, reasons_optional=True)
    # Still bound (its keys are under that crypto instance): the crypto instance stays.
    assert_kp_error(rc(kp, "DELETE", f"/v2/resource_instances/{hs_id}"), 409, "INSTANCE_IN_USE_ERR")
    check_status(rc(kp, "DELETE", f"/v1/authorizations/{auth2['id']}"), 204)


def test_unused_instances_are_deleted_and_updated(kp):
    hs = hs_crypto(kp, units=1)
    k = kms(kp, crypto=hs["guid"])
    r = check_status(rc(kp, "PATCH", f"/v2/resource_instances/{hs['guid']}",
                        {"name": "renamed", "parameters": {"units": 3}}), 200).json()
    assert r["name"] == "renamed" and r["parameters"] == {"units": 3}
    # An empty kms instance goes at once; then its crypto instance is free to go.
    check_status(rc(kp, "DELETE", f"/v2/resource_instances/{k['guid']}"), 204)
    assert rc(kp, "GET", f"/v2/resource_instances/{k['guid']}").status_code == 404
    check_status(rc(kp, "DELETE", f"/v2/resource_instances/{hs['guid']}"), 204)
    assert_kp_error(rc(kp, "GET", f"/v2/resource_instances/{hs['guid']}"), 404, "NOT_FOUND_ERR")
    assert_kp_error(rc(kp, "DELETE", f"/v2/resource_instances/{hs['guid']}"), 404, "NOT_FOUND_ERR")
    # A standard kms instance (the shared unit) needs no authorization.
    std = kms(kp)
    assert std["resource_plan_id"] == "kms-standard" and std["parameters"] == {}
    create_root_key(kp, std["guid"])


@pytest.fixture(scope="module")
def spare(kp):
    hs = hs_crypto(kp)
    return {"hs": hs["guid"], "kms": kms(kp)["guid"]}


BAD_INSTANCES = [
    ({"resource_plan_id": "hs-crypto-standard", "parameters": {"units": 0}}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "hs-crypto-standard", "parameters": {"units": 9}}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "hs-crypto-standard", "parameters": {"units": "two"}}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "hs-crypto-standard", "parameters": {"units": -1}}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "hs-crypto-standard", "parameters": {"cores": 2}}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "hs-crypto-standard", "parameters": [1]}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "kms-dedicated"}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "kms-standard", "parameters": {"crypto_instance": "{hs}"}}, "INVALID_FIELD_ERR"),
    ({"service": "kms", "parameters": {"crypto_instance": "{kms}"}}, "INVALID_FIELD_ERR"),
    ({"service": "kms", "parameters": {"crypto_instance": "00000000-0000-4000-8000-000000000000"}}, "INVALID_FIELD_ERR"),
    ({"service": "kms", "parameters": {"units": 1}}, "INVALID_FIELD_ERR"),
    ({"service": "kms", "plan": "gold"}, "INVALID_FIELD_ERR"),
    ({"service": "Not A Service"}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "kms-standard", "service": "hs-crypto"}, "INVALID_FIELD_ERR"),
    ({}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": 7}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "kms-standard", "name": ""}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "kms-standard", "name": "x" * 181}, "INVALID_FIELD_ERR"),
    ({"resource_plan_id": "kms-standard", "target": "Mars Base"}, "INVALID_FIELD_ERR"),
]


@pytest.mark.parametrize("body,code", BAD_INSTANCES)
def test_bad_instances_are_refused(kp, spare, body, code):
    import json
    body = json.loads(json.dumps(body).replace("{hs}", spare["hs"]).replace("{kms}", spare["kms"]))
    body.setdefault("name", uniq("bad"))
    before = len(rc(kp, "GET", "/v2/resource_instances").json()["resources"])
    assert_kp_error(rc(kp, "POST", "/v2/resource_instances", body), 400, code)
    assert len(rc(kp, "GET", "/v2/resource_instances").json()["resources"]) == before


def test_bad_requests_are_4xx(kp, spare):
    assert_kp_error(kp.req("POST", "/v2/resource_instances", raw=b"{not json", instance=False,
                           headers={"Content-Type": "application/json"}), 400, "BAD_BODY_ERR")
    assert_kp_error(kp.req("POST", "/v2/resource_instances", instance=False), 400, "NO_BODY_ERR")
    assert_kp_error(rc(kp, "GET", "/v2/resource_instances/not-an-id"), 404, "NOT_FOUND_ERR")
    assert_kp_error(rc(kp, "GET", f"/crypto_v2/instances/{spare['kms']}"), 404, "NOT_FOUND_ERR")
    assert_kp_error(rc(kp, "GET", "/crypto_v1/instances/00000000-0000-4000-8000-000000000000"), 404, "NOT_FOUND_ERR")
    assert_kp_error(rc(kp, "PATCH", f"/v2/resource_instances/{spare['kms']}", {"parameters": {"units": 2}}),
                    400, "INVALID_FIELD_ERR")
    assert_kp_error(rc(kp, "PATCH", f"/v2/resource_instances/{spare['kms']}",
                       {"parameters": {"crypto_instance": spare["hs"]}}), 400, "INVALID_FIELD_ERR")
    assert_kp_error(rc(kp, "PATCH", f"/v2/resource_instances/{spare['hs']}", {}), 400, "BAD_BODY_ERR")
    assert_kp_error(rc(kp, "PATCH", f"/v2/resource_instances/{spare['hs']}", {"parameters": {"units": 99}}),
                    400, "INVALID_FIELD_ERR")
    assert_kp_error(rc(kp, "DELETE", f"/v2/resource_instances/{spare['kms']}", params={"force": "maybe"}),
                    400, "INVALID_QUERY_PARAM_ERR")
    for body in ({"source": {"service_name": "kms"}, "target": {"service_name": "hs-crypto"}, "roles": ["Owner"]},
                 {"source": {"service_name": "kms"}, "target": {"service_name": "hs-crypto"}, "roles": []},
                 {"source": {"service_name": "kms"}, "target": {"service_name": "hs-crypto"}},
                 {"source": "kms", "target": {"service_name": "hs-crypto"}, "roles": ["Reader"]},
                 {"source": {"service_name": "kms"}, "target": {"service_name": "cloud-object-storage"}, "roles": ["Reader"]},
                 {"source": {"service_name": "kms", "instance_id": spare["hs"]},
                  "target": {"service_name": "hs-crypto"}, "roles": ["Reader"]},
                 {"source": {"service_name": "kms"},
                  "target": {"service_name": "hs-crypto", "instance_id": "00000000-0000-4000-8000-000000000000"},
                  "roles": ["Reader"]}):
        assert_kp_error(rc(kp, "POST", "/v1/authorizations", body), 400, "INVALID_FIELD_ERR")
    assert_kp_error(rc(kp, "GET", "/v1/authorizations/nope"), 404, "NOT_FOUND_ERR")
    assert_kp_error(rc(kp, "DELETE", "/v1/authorizations/nope"), 404, "NOT_FOUND_ERR")
    # No token: 401 everywhere.
    for method, path in (("GET", "/v2/resource_instances"), ("POST", "/v1/authorizations"),
                         ("GET", f"/crypto_v2/instances/{spare['hs']}")):
        assert_kp_error(kp.req(method, path, auth=False, instance=False), 401, None, reasons_optional=True)


def test_platform_roles_gate_the_controller(server, svc, spare):
    """A service ID holds no platform role: it may not create, delete or authorize."""
    assert_kp_error(rc(svc, "POST", "/v2/resource_instances", {"name": "x", "resource_plan_id": "kms-standard"}),
                    401, None, reasons_optional=True)
    assert_kp_error(rc(svc, "DELETE", f"/v2/resource_instances/{spare['kms']}"), 401, None, reasons_optional=True)
    assert_kp_error(rc(svc, "POST", "/v1/authorizations",
                       {"source": {"service_name": "kms"}, "target": {"service_name": "hs-crypto"}, "roles": ["Reader"]}),
                    401, None, reasons_optional=True)
    assert rc(svc, "GET", "/v2/resource_instances").json()["resources"] == []


GARBAGE = [b"", b"null", b"[]", b"\"x\"", b"42", b"{", b"{\"name\":", b"\x00\xff", b"{\"parameters\":null}",
           b"{\"name\":{}}", b"{\"source\":[]}", b"{\"roles\":\"Reader\"}", "{\"name\":\"\u00e9\u0000\"}".encode()]


@pytest.mark.parametrize("method,path", [
    ("POST", "/v2/resource_instances"), ("PATCH", "/v2/resource_instances/{hs}"),
    ("POST", "/v2/resource_keys"), ("POST", "/v1/authorizations"),
])
def test_malformed_bodies_are_4xx_and_change_nothing(kp, spare, method, path):
    path = path.replace("{hs}", spare["hs"])
    before = (rc(kp, "GET", "/v2/resource_instances").json(), rc(kp, "GET", "/v1/authorizations").json())
    for raw in GARBAGE:
        r = kp.req(method, path, raw=raw, instance=False, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, f"{raw!r}: {r.status_code} {r.text[:200]}"
        assert_kp_error(r, r.status_code, None, reasons_optional=r.status_code == 401)
    after = (rc(kp, "GET", "/v2/resource_instances").json(), rc(kp, "GET", "/v1/authorizations").json())
    assert after == before
