"""§5 rows 22–26, §6.8, §6.10, §6.6 dual auth: key policies, instance policies, dual-auth delete,
allowed_ip_port."""
import pytest

from api_helpers import (JSON_CT, POLICY_TYPE, RFC3339, _NO, assert_kp_error, check_status, describe,
                         policy_envelope)


def rotation_res(month, enabled=True):
    r = {"type": POLICY_TYPE, "rotation": {"interval_month": month}}
    if enabled is not None:
        r["rotation"]["enabled"] = enabled
    return r


def dual_res(enabled=True):
    return {"type": POLICY_TYPE, "dualAuthDelete": {"enabled": enabled}}


# --- key policies ------------------------------------------------------------------------------

@pytest.mark.parametrize("month", [1, 3, 12])
def test_put_get_rotation_policy(kp, month):
    k = kp.root_key()
    r = kp.put(f"/api/v2/keys/{k['id']}/policies", policy_envelope(rotation_res(month)),
               params={"policy": "rotation"})
    check_status(r, 200)
    body = r.json()
    assert body["metadata"]["collectionType"] == POLICY_TYPE
    res = body["resources"][0]
    assert res["rotation"]["interval_month"] == month
    assert res["type"] == POLICY_TYPE
    g = kp.get(f"/api/v2/keys/{k['id']}/policies", params={"policy": "rotation"})
    check_status(g, 200)
    assert JSON_CT.match(g.headers["content-type"]), describe(g)
    gb = g.json()
    assert gb["metadata"]["collectionType"] == POLICY_TYPE
    assert len(gb["resources"]) == 1
    p = gb["resources"][0]
    assert p["rotation"]["interval_month"] == month
    assert p["rotation"].get("enabled", True) is True
    for f in ("id", "crn", "creationDate", "createdBy", "lastUpdateDate", "updatedBy"):
        assert f in p, (f, p)
    assert RFC3339.match(p["creationDate"])
    assert ":policy:" in p["crn"]
    assert "dualAuthDelete" not in p
    md = kp.metadata(k["id"])
    assert md["rotation"]["interval_month"] == month


def test_rotation_policy_without_enabled_and_without_query(kp):
    # PY2 sends only interval_month and never ?policy= (§9.2)
    k = kp.root_key()
    r = kp.put(f"/api/v2/keys/{k['id']}/policies", policy_envelope(rotation_res(2, enabled=None)))
    check_status(r, 200)
    g = kp.get(f"/api/v2/keys/{k['id']}/policies").json()
    rot = [p for p in g["resources"] if "rotation" in p]
    assert rot and rot[0]["rotation"]["interval_month"] == 2


def test_rotation_policy_update(kp):
    k = kp.root_key()
    kp.put(f"/api/v2/keys/{k['id']}/policies", policy_envelope(rotation_res(3)), params={"policy": "rotation"})
    kp.put(f"/api/v2/keys/{k['id']}/policies", policy_envelope(rotation_res(7)), params={"policy": "rotation"})
    g = kp.get(f"/api/v2/keys/{k['id']}/policies", params={"policy": "rotation"}).json()
    assert len(g["resources"]) == 1 and g["resources"][0]["rotation"]["interval_month"] == 7


@pytest.mark.parametrize("month", [-1, 0, 13, 100, "3", 2.5, None])
def test_rotation_policy_bad_interval(kp, month):
    k = kp.root_key()
    r = kp.put(f"/api/v2/keys/{k['id']}/policies", policy_envelope(rotation_res(month)),
               params={"policy": "rotation"})
    if isinstance(month, int):
        assert_kp_error(r, 400, "INVALID_FIELD_ERR")
    else:
        assert_kp_error(r, 400, ("INVALID_FIELD_ERR", "BAD_BODY_ERR"))


def test_rotation_policy_on_standard_key(kp):
    k = kp.standard_key()
    r = kp.put(f"/api/v2/keys/{k['id']}/policies", policy_envelope(rotation_res(3)), params={"policy": "rotation"})
    assert_kp_error(r, 400, "KEY_ROOT_REQ_ERR")


def test_get_policies_empty(kp):
    k = kp.root_key()
    for params in ({"policy": "rotation"}, {"policy": "dualAuthDelete"}):
        r = kp.get(f"/api/v2/keys/{k['id']}/policies", params=params)
        check_status(r, 200)
        assert r.json()["metadata"]["collectionType"] == POLICY_TYPE
        res = r.json()["resources"]
        # either no resource, or a disabled / default one
        for p in res:
            if "dualAuthDelete" in p:
                assert p["dualAuthDelete"]["enabled"] is False


def test_put_both_policies_in_one_request(kp):
    k = kp.root_key()
    r = kp.put(f"/api/v2/keys/{k['id']}/policies", policy_envelope(rotation_res(5), dual_res(True)))
    check_status(r, 200)
    g = kp.get(f"/api/v2/keys/{k['id']}/policies").json()
    rot = [p for p in g["resources"] if "rotation" in p]
    dual = [p for p in g["resources"] if "dualAuthDelete" in p]
    assert rot[0]["rotation"]["interval_month"] == 5
    assert dual[0]["dualAuthDelete"]["enabled"] is True
    only = kp.get(f"/api/v2/keys/{k['id']}/policies", params={"policy": "dualAuthDelete"}).json()
    assert len(only["resources"]) == 1 and "rotation" not in only["resources"][0]


@pytest.mark.parametrize("policy,body,code", [
    ("bogus", policy_envelope(rotation_res(3)), None),
    ("rotation", policy_envelope(rotation_res(3), total=2), "COLLECTION_TOTAL_MISMATCH_ERR"),
    ("rotation", policy_envelope(dual_res(True)), "BODY_QUERY_PARAM_MISMATCH_ERR"),
    ("rotation", policy_envelope(rotation_res(3), rotation_res(4)), "NUM_COLLECTION_RESOURCE_ERR"),
    (None, {"resources": "x"}, None),
    (None, policy_envelope(), None),
    (None, _NO, ("NO_BODY_ERR", "BAD_BODY_ERR")),
    ("dualAuthDelete", policy_envelope({"type": POLICY_TYPE, "dualAuthDelete": {"enabled": "yes"}}), None),
    ("dualAuthDelete", policy_envelope({"type": POLICY_TYPE, "dualAuthDelete": {}}), None),
    # Go omits interval_month when 0 (omitempty): "interval_month is missing"
    ("rotation", policy_envelope({"type": POLICY_TYPE, "rotation": {}}), ("INVALID_FIELD_ERR", "BAD_BODY_ERR")),
])
def test_key_policy_put_errors(kp, policy, body, code):
    k = kp.root_key()
    params = {"policy": policy} if policy else None
    assert_kp_error(kp.put(f"/api/v2/keys/{k['id']}/policies", body, params=params), 400, code)
    g = kp.get(f"/api/v2/keys/{k['id']}/policies").json()
    for p in g["resources"]:
        assert p.get("dualAuthDelete", {}).get("enabled", False) is False
        assert "rotation" not in p or p["rotation"].get("enabled") is False


def test_key_policy_get_bad_filter(kp):
    k = kp.root_key()
    assert_kp_error(kp.get(f"/api/v2/keys/{k['id']}/policies", params={"policy": "bogus"}), 400)


def test_key_policies_unknown_key(kp):
    kid = "00000000-0000-4000-8000-000000000000"
    assert_kp_error(kp.get(f"/api/v2/keys/{kid}/policies"), 404, "KEY_NOT_FOUND_ERR")
    assert_kp_error(kp.put(f"/api/v2/keys/{kid}/policies", policy_envelope(rotation_res(3))), 404,
                    "KEY_NOT_FOUND_ERR")


# --- dual-auth delete -----------------------------------------------------------------------

def _dual_key(kp):
    k = kp.root_key()
    r = kp.put(f"/api/v2/keys/{k['id']}/policies", policy_envelope(dual_res(True)),
               params={"policy": "dualAuthDelete"})
    check_status(r, 200)
    assert r.json()["resources"][0]["dualAuthDelete"]["enabled"] is True
    assert kp.metadata(k["id"])["dualAuthDelete"]["enabled"] is True
    return k


def test_dual_auth_delete_needs_authorization(kp, kp2):
    k = _dual_key(kp)
    assert_kp_error(kp.delete(f"/api/v2/keys/{k['id']}"), 409, "AUTHORIZATIONS_NOT_MET")
    assert_kp_error(kp2.delete(f"/api/v2/keys/{k['id']}"), 409, "AUTHORIZATIONS_NOT_MET")
    assert kp.metadata(k["id"])["state"] == 1


def test_dual_auth_delete_two_different_principals(kp, kp2):
    k = _dual_key(kp)
    check_status(kp.action(k["id"], "setKeyForDeletion"), 204)
    md = kp.metadata(k["id"])
    assert md["dualAuthDelete"]["keySetForDeletion"] is True
    assert RFC3339.match(md["dualAuthDelete"]["authExpiration"])
    # the same principal cannot complete the deletion
    assert_kp_error(kp.delete(f"/api/v2/keys/{k['id']}"), 409, "AUTHORIZATIONS_NOT_MET")
    assert_kp_error(kp.delete(f"/api/v2/keys/{k['id']}", params={"force": "true"}), 409, "AUTHORIZATIONS_NOT_MET")
    assert kp.metadata(k["id"])["state"] == 1
    r = kp2.delete(f"/api/v2/keys/{k['id']}", headers={"Prefer": "return=representation"})
    check_status(r, 200)
    assert r.json()["resources"][0]["state"] == 5


def test_dual_auth_set_by_second_delete_by_first(kp, kp2):
    k = _dual_key(kp)
    check_status(kp2.action(k["id"], "setKeyForDeletion", form="query"), 204)
    kp.delete_key(k["id"])


def test_dual_auth_unset(kp, kp2):
    k = _dual_key(kp)
    check_status(kp.action(k["id"], "setKeyForDeletion"), 204)
    check_status(kp.action(k["id"], "unsetKeyForDeletion"), 204)
    md = kp.metadata(k["id"])
    assert md["dualAuthDelete"].get("keySetForDeletion", False) is False
    assert_kp_error(kp2.delete(f"/api/v2/keys/{k['id']}"), 409, "AUTHORIZATIONS_NOT_MET")
    check_status(kp.action(k["id"], "unsetKeyForDeletion", form="query"), 204)


def test_dual_auth_disable_policy_allows_single_delete(kp):
    k = _dual_key(kp)
    r = kp.put(f"/api/v2/keys/{k['id']}/policies", policy_envelope(dual_res(False)),
               params={"policy": "dualAuthDelete"})
    check_status(r, 200)
    assert_kp_error(kp.action(k["id"], "setKeyForDeletion"), 409, "NOT_DUAL_AUTH_ERR")
    kp.delete_key(k["id"])


# --- instance policies (own server: they change instance-wide behaviour) --------------------

@pytest.fixture(scope="module")
def ikp(server_factory):
    return server_factory().client()


INSTANCE_POLICIES = {
    "dualAuthDelete": {"enabled": False},
    "metrics": {"enabled": True},
    "allowedNetwork": {"enabled": True, "attributes": {"allowed_network": "public-and-private"}},
    "allowedIP": {"enabled": True, "attributes": {"allowed_ip": ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]}},
    "keyCreateImportAccess": {"enabled": True, "attributes": {
        "create_root_key": True, "create_standard_key": True, "import_root_key": True,
        "import_standard_key": True, "enforce_token": False}},
    "rotation": {"enabled": True, "attributes": {"interval_month": 3}},
}


def ipol(ptype, data):
    return {"policy_type": ptype, "policy_data": data}


def put_ipol(c, ptype, data, query=True):
    return c.put("/api/v2/instance/policies", policy_envelope(ipol(ptype, data)),
                 params={"policy": ptype} if query else None)


@pytest.mark.parametrize("ptype", list(INSTANCE_POLICIES))
def test_instance_policy_put_get(ikp, ptype):
    data = INSTANCE_POLICIES[ptype]
    r = put_ipol(ikp, ptype, data)
    check_status(r, 204)
    g = ikp.get("/api/v2/instance/policies", params={"policy": ptype})
    check_status(g, 200)
    assert JSON_CT.match(g.headers["content-type"]), describe(g)
    body = g.json()
    assert body["metadata"]["collectionType"] == POLICY_TYPE
    assert len(body["resources"]) == 1, describe(g)
    p = body["resources"][0]
    assert p["policy_type"] == ptype
    assert p["policy_data"]["enabled"] == data["enabled"]
    if "attributes" in data:
        for k, v in data["attributes"].items():
            assert p["policy_data"]["attributes"][k] == v, (k, p)
    for f in ("creationDate", "createdBy", "updatedBy", "lastUpdated"):
        assert f in p, (f, p)
    assert RFC3339.match(p["lastUpdated"])


def test_instance_policies_all_without_filter(ikp):
    body = policy_envelope(*[ipol(t, d) for t, d in INSTANCE_POLICIES.items()])
    check_status(ikp.put("/api/v2/instance/policies", body), 204)
    g = check_status(ikp.get("/api/v2/instance/policies"), 200).json()
    types = [p["policy_type"] for p in g["resources"]]
    assert sorted(types) == sorted(INSTANCE_POLICIES), g
    assert g["metadata"]["collectionTotal"] == len(g["resources"])


def test_allowed_ip_port(ikp):
    check_status(put_ipol(ikp, "allowedIP", INSTANCE_POLICIES["allowedIP"]), 204)
    r = ikp.get("/api/v2/instance/allowed_ip_port")
    check_status(r, 200)
    body = r.json()
    assert body["metadata"]["collectionType"] == "application/vnd.ibm.kms.allowed_ip_metadata+json"
    assert body["metadata"]["collectionTotal"] == 1
    assert isinstance(body["resources"][0]["private_endpoint_port"], int)


def test_allowed_ip_port_without_policy(server_factory):
    c = server_factory().client()
    r = c.get("/api/v2/instance/allowed_ip_port")
    check_status(r, 200)
    body = r.json()
    assert body["metadata"]["collectionType"] == "application/vnd.ibm.kms.allowed_ip_metadata+json"
    assert body["resources"] == []


@pytest.mark.parametrize("policy,body,code", [
    ("metrics", policy_envelope(ipol("metrics", {"enabled": True}), total=2), "COLLECTION_TOTAL_MISMATCH_ERR"),
    (None, policy_envelope(ipol("metrics", {"enabled": True}), ipol("dualAuthDelete", {"enabled": False}), total=1),
     "COLLECTION_TOTAL_MISMATCH_ERR"),
    ("metrics", policy_envelope(ipol("metrics", {"enabled": True}), ipol("dualAuthDelete", {"enabled": False})),
     "NUM_COLLECTION_RESOURCE_ERR"),
    ("metrics", policy_envelope(ipol("dualAuthDelete", {"enabled": True})), "BODY_QUERY_PARAM_MISMATCH_ERR"),
    ("dualAuthDelete", policy_envelope(ipol("dualAuthDelete", {"enabled": True, "attributes": {"x": 1}})),
     "BAD_BODY_ERR"),
    ("metrics", policy_envelope(ipol("metrics", {"enabled": True, "attributes": {}})), "BAD_BODY_ERR"),
    ("rotation", policy_envelope(ipol("rotation", {"enabled": True, "attributes": {"interval_month": 13}})),
     "INVALID_FIELD_ERR"),
    ("rotation", policy_envelope(ipol("rotation", {"enabled": True, "attributes": {"interval_month": 0}})),
     "INVALID_FIELD_ERR"),
    ("rotation", policy_envelope(ipol("rotation", {"enabled": True})), None),
    ("allowedNetwork", policy_envelope(ipol("allowedNetwork", {"enabled": True, "attributes": {"allowed_network": "everywhere"}})), None),
    ("allowedNetwork", policy_envelope(ipol("allowedNetwork", {"enabled": True})), None),
    ("allowedIP", policy_envelope(ipol("allowedIP", {"enabled": True, "attributes": {"allowed_ip": ["not-a-cidr"]}})), None),
    ("bogus", policy_envelope(ipol("bogus", {"enabled": True})), None),
    (None, policy_envelope(ipol("bogus", {"enabled": True})), None),
    ("metrics", policy_envelope(ipol("metrics", {"enabled": "yes"})), None),
    ("metrics", policy_envelope(ipol("metrics", {})), None),
    ("metrics", _NO, ("NO_BODY_ERR", "BAD_BODY_ERR")),
    ("keyCreateImportAccess", policy_envelope(ipol("keyCreateImportAccess", {"enabled": True, "attributes": {"create_root_key": "no"}})), None),
    ("keyCreateImportAccess", policy_envelope(ipol("keyCreateImportAccess", {"enabled": True, "attributes": {"bogus": True}})), None),
])
def test_instance_policy_validation(ikp, policy, body, code):
    before = ikp.get("/api/v2/instance/policies").json()
    r = ikp.put("/api/v2/instance/policies", body, params={"policy": policy} if policy else None)
    assert_kp_error(r, 400, code)
    if code == "INVALID_FIELD_ERR":
        t = r.json()["resources"][0]["reasons"][0].get("target")
        assert t == {"type": "field", "name": "interval_month"}, describe(r)
    after = ikp.get("/api/v2/instance/policies").json()
    assert before == after, "a refused PUT must not change instance policies"


def test_instance_policy_get_bad_filter(ikp):
    assert_kp_error(ikp.get("/api/v2/instance/policies", params={"policy": "bogus"}), 400)


def test_instance_dual_auth_applies_to_new_keys(server_factory):
    c = server_factory().client()
    old = c.root_key()
    check_status(put_ipol(c, "dualAuthDelete", {"enabled": True}), 204)
    new = c.root_key()
    assert new["dualAuthDelete"]["enabled"] is True
    assert c.metadata(old["id"])["dualAuthDelete"]["enabled"] is False
    assert_kp_error(c.delete(f"/api/v2/keys/{new['id']}"), 409, "AUTHORIZATIONS_NOT_MET")
    c.delete_key(old["id"])
    # keys_with_policy_overrides exists to override the instance policy for one key
    r = c.create_key_resp(path="/api/v2/keys_with_policy_overrides", dualAuthDelete={"enabled": False})
    o = check_status(r, 201).json()["resources"][0]
    assert o["dualAuthDelete"]["enabled"] is False, describe(r)
    c.delete_key(o["id"])


def test_instance_rotation_policy_applies_to_new_root_keys(server_factory):
    c = server_factory().client()
    check_status(put_ipol(c, "rotation", {"enabled": True, "attributes": {"interval_month": 5}}), 204)
    k = c.root_key()
    md = c.metadata(k["id"])
    assert md.get("rotation", {}).get("interval_month") == 5, md
    # a per-key override wins
    r = c.create_key_resp(path="/api/v2/keys_with_policy_overrides", rotation={"enabled": True, "interval_month": 2})
    o = check_status(r, 201).json()["resources"][0]
    assert c.metadata(o["id"])["rotation"]["interval_month"] == 2
    # standard keys never get a rotation policy
    s = c.standard_key()
    assert c.metadata(s["id"]).get("rotation", {}).get("enabled", False) is False


def test_key_create_import_access(server_factory):
    c = server_factory().client()
    attrs = {"create_root_key": False, "create_standard_key": True, "import_root_key": True,
             "import_standard_key": False, "enforce_token": False}
    check_status(put_ipol(c, "keyCreateImportAccess", {"enabled": True, "attributes": attrs}), 204)
    import os
    from api_helpers import b64
    assert_kp_error(c.create_key_resp(extractable=False), 409, "KEY_CREATE_IMPORT_ACCESS_ERR")
    assert_kp_error(c.create_key_resp(extractable=False, path="/api/v2/keys_with_policy_overrides"), 409,
                    "KEY_CREATE_IMPORT_ACCESS_ERR")
    assert_kp_error(c.create_key_resp(extractable=True, payload=b64(os.urandom(20))), 409,
                    "KEY_CREATE_IMPORT_ACCESS_ERR")
    c.create_key(extractable=True)
    check_status(c.create_key_resp(extractable=False, payload=b64(os.urandom(32))), 201)
    # enforce_token: plain (non-secure) import of a root key is refused
    attrs.update(create_root_key=True, enforce_token=True)
    check_status(put_ipol(c, "keyCreateImportAccess", {"enabled": True, "attributes": attrs}), 204)
    assert_kp_error(c.create_key_resp(extractable=False, payload=b64(os.urandom(32))), 409,
                    "KEY_CREATE_IMPORT_ACCESS_ERR")
    c.root_key()
    # ... while a secure import (import token) is still allowed
    check_status(c.post("/api/v2/import_token", {"expiration": 600, "maxAllowedRetrievals": 1}), 200, 201)
    tok = check_status(c.get("/api/v2/import_token"), 200).json()
    from api_helpers import secure_import_fields
    check_status(c.create_key_resp(extractable=False, **secure_import_fields(tok, os.urandom(32))), 201)
    # disabling the policy lifts every restriction
    check_status(put_ipol(c, "keyCreateImportAccess", {"enabled": False}), 204)
    check_status(c.create_key_resp(extractable=True, payload=b64(os.urandom(20))), 201)
    check_status(c.create_key_resp(extractable=False, payload=b64(os.urandom(32))), 201)


def test_allowed_ip_blocks_other_addresses(server_factory):
    c = server_factory().client()
    r = put_ipol(c, "allowedIP", {"enabled": True, "attributes": {"allowed_ip": ["10.0.0.0/8"]}})
    if r.status_code == 204:
        g = c.get("/api/v2/keys")
        assert_kp_error(g, (401, 403), ("UNAUTHORIZED_ERR", "FEATURE_RESTRICTED_ERR"), reasons_optional=True)
    else:
        # refusing a policy that would lock out the caller is acceptable too
        assert_kp_error(r, (400, 403, 409))


def test_put_policy_prefer_minimal_still_has_body(kp):
    """keyprotect-go-client SetPolicy sends `Prefer: return=minimal` (or representation) and reads
    resources[0] of the answer (policy.go) — a 200 must carry the policy either way (§4.2)."""
    k = kp.root_key()
    for prefer in ("return=minimal", "return=representation"):
        r = kp.put(f"/api/v2/keys/{k['id']}/policies", policy_envelope(rotation_res(4, enabled=None)),
                   headers={"Prefer": prefer})
        check_status(r, 200)
        assert r.json()["resources"][0]["rotation"]["interval_month"] == 4, describe(r)


def test_disabling_instance_policy_resets_attributes(server_factory):
    """§6.10: disabling a policy with attributes resets them."""
    c = server_factory().client()
    attrs = {"create_root_key": False, "create_standard_key": False, "import_root_key": False,
             "import_standard_key": False, "enforce_token": True}
    check_status(put_ipol(c, "keyCreateImportAccess", {"enabled": True, "attributes": attrs}), 204)
    check_status(put_ipol(c, "keyCreateImportAccess", {"enabled": False}), 204)
    p = c.get("/api/v2/instance/policies", params={"policy": "keyCreateImportAccess"}).json()["resources"]
    assert p and p[0]["policy_data"]["enabled"] is False
    got = p[0]["policy_data"].get("attributes")
    assert got is None or got != attrs, f"attributes survived disabling: {got}"
    c.root_key()
    check_status(put_ipol(c, "allowedIP", INSTANCE_POLICIES["allowedIP"]), 204)
    assert c.get("/api/v2/instance/allowed_ip_port").json()["resources"]
    check_status(put_ipol(c, "allowedIP", {"enabled": False}), 204)
    r = check_status(c.get("/api/v2/instance/allowed_ip_port"), 200)
    assert r.json()["resources"] == [], describe(r)
