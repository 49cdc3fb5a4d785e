"""§5 rows 29–30, §6.11: registrations (list per key / all keys, service-to-service writes,
deletion protection)."""
import pytest

from api_helpers import (JSON_CT, RFC3339, REG_INPUT_TYPE, _NO, assert_kp_error, check_status, crn_path,
                         describe, uniq)

REG_TYPE = "application/vnd.ibm.kms.registration+json"


def crn(acct, inst, name, rtype="bucket", svc="cloud-object-storage"):
    return f"crn:v1:bluemix:public:{svc}:global:a/{acct}:{inst}:{rtype}:{name}"


def reg_body(prevent=False, desc="registered by test", meta="meta", **extra):
    r = {"preventKeyDeletion": prevent, "description": desc, "registrationMetadata": meta}
    r.update(extra)
    return {"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1}, "resources": [r]}


def register(svc, kid, c, method="POST", expect=(200, 201, 204), **kw):
    r = svc.req(method, f"/api/v2/keys/{kid}/registrations/{crn_path(c)}", reg_body(**kw))
    check_status(r, *expect)
    return r


def regs(c, kid=None, params=None):
    path = f"/api/v2/keys/{kid}/registrations" if kid else "/api/v2/keys/registrations"
    r = c.get(path, params=params)
    check_status(r, 200)
    assert JSON_CT.match(r.headers["content-type"]), describe(r)
    body = r.json()
    assert body["metadata"]["collectionType"] == REG_TYPE
    assert body["metadata"]["collectionTotal"] == len(body["resources"])
    return body


@pytest.fixture
def acct():
    return uniq("acct")


def test_register_and_list_per_key(kp, svc, acct):
    k = kp.root_key()
    c1 = crn(acct, "inst1", "bucket-a")
    register(svc, k["id"], c1, desc="protects bucket-a")
    body = regs(kp, k["id"])
    assert len(body["resources"]) == 1
    g = body["resources"][0]
    assert g["keyId"] == k["id"] and g["resourceCrn"] == c1
    assert g["preventKeyDeletion"] is False
    assert g["description"] == "protects bucket-a"
    assert g["keyVersion"]["id"] == k["keyVersion"]["id"]
    assert RFC3339.match(g["creationDate"]) and g["createdBy"]
    assert "lastUpdated" in g and "updatedBy" in g
    assert g.get("keyName") in (None, k["name"])
    assert "registrationMetadata" not in g, "registrationMetadata only on service-to-service calls"


def test_list_registrations_empty(kp):
    k = kp.root_key()
    assert regs(kp, k["id"])["resources"] == []


def test_list_registrations_unknown_key(kp):
    assert_kp_error(kp.get("/api/v2/keys/00000000-0000-4000-8000-000000000000/registrations"), 404,
                    "KEY_NOT_FOUND_ERR")


def test_list_all_keys_with_crn_wildcards(kp, svc, acct):
    k1, k2 = kp.root_key(), kp.root_key()
    a = crn(acct, "inst1", "bucket-a")
    b = crn(acct, "inst1", "bucket-b")
    v = crn(acct, "inst1", "vol-1", rtype="volume", svc="is")
    other = crn(acct, "inst2", "bucket-c")
    register(svc, k1["id"], a)
    register(svc, k2["id"], b)
    register(svc, k2["id"], other, prevent=True)
    register(svc, k1["id"], v)
    q = lambda s: {r["resourceCrn"] for r in regs(kp, params={"urlEncodedResourceCRNQuery": s})["resources"]}
    assert q(a) == {a}
    assert q(crn(acct, "inst1", "*")) == {a, b}
    assert q(crn(acct, "inst1", "bucket-*")) == {a, b}
    assert q(f"crn:v1:bluemix:public:cloud-object-storage:global:a/{acct}:inst1:*") == {a, b}
    assert q(f"crn:v1:bluemix:public:cloud-object-storage:global:a/{acct}:inst2:*") == {other}
    # per key: all of k2's
    assert {r["resourceCrn"] for r in regs(kp, k2["id"])["resources"]} == {b, other}
    per = regs(kp, k2["id"], {"urlEncodedResourceCRNQuery": "crn:v1:bluemix:public:cloud-object-storage:*"})
    assert {r["resourceCrn"] for r in per["resources"]} == {b, other}
    # preventKeyDeletion filter
    pk = regs(kp, params={"urlEncodedResourceCRNQuery": f"crn:v1:bluemix:public:cloud-object-storage:global:a/{acct}:inst2:*",
                          "preventKeyDeletion": "true"})
    assert [r["resourceCrn"] for r in pk["resources"]] == [other]
    pk = regs(kp, k2["id"], {"preventKeyDeletion": "false"})
    assert [r["resourceCrn"] for r in pk["resources"]] == [b]
    # totalCount / paging
    t = regs(kp, k2["id"], {"totalCount": "true", "limit": "1"})
    assert t["metadata"]["totalCount"] == 2 and len(t["resources"]) == 1
    t2 = regs(kp, k2["id"], {"limit": "1", "offset": "1"})
    assert len(t2["resources"]) == 1 and t2["resources"][0]["resourceCrn"] != t["resources"][0]["resourceCrn"]


@pytest.mark.parametrize("query", ["crn:v1:*", "crn:v1:bluemix:public:*:global:a/x:y:bucket:z", "*"])
def test_all_keys_wildcard_in_first_8_segments(kp, query):
    # KPDOCS: the query "should not contain an asterisk in the first eight segments"; whether that is
    # refused (400) or simply matches is not documented. Either way: no 5xx, KP shapes.
    r = kp.get("/api/v2/keys/registrations", params={"urlEncodedResourceCRNQuery": query})
    if r.status_code != 200:
        assert_kp_error(r, 400)


@pytest.mark.parametrize("params", [{"limit": "-1"}, {"limit": "abc"}, {"limit": "5001"}, {"offset": "x"},
                                    {"preventKeyDeletion": "maybe"}, {"urlEncodedResourceCRNQuery": "not-a-crn"}])
def test_registrations_bad_query(kp, params):
    assert_kp_error(kp.get("/api/v2/keys/registrations", params=params), 400)


def test_registrations_via_alias(kp, svc, acct):
    al = uniq("regal")
    k = kp.root_key(aliases=[al])
    c = crn(acct, "i", "b")
    register(svc, al, c)
    assert [r["keyId"] for r in regs(kp, al)["resources"]] == [k["id"]]


def test_update_and_replace_registration(kp, svc, acct):
    k = kp.root_key()
    c = crn(acct, "i", "upd")
    register(svc, k["id"], c)
    # PATCH: partial update
    r = svc.patch(f"/api/v2/keys/{k['id']}/registrations/{crn_path(c)}",
                  {"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
                   "resources": [{"description": "patched"}]})
    check_status(r, 200, 204)
    g = regs(kp, k["id"])["resources"][0]
    assert g["description"] == "patched" and g["preventKeyDeletion"] is False
    # PUT: replace, needs all four fields
    kp.rotate(k["id"])
    v2 = kp.metadata(k["id"])["keyVersion"]["id"]
    register(svc, k["id"], c, method="PUT", prevent=True, desc="replaced", meta="m2", keyVersionId=v2)
    g = regs(kp, k["id"])["resources"][0]
    assert g["description"] == "replaced" and g["preventKeyDeletion"] is True
    assert g["keyVersion"]["id"] == v2
    r = svc.put(f"/api/v2/keys/{k['id']}/registrations/{crn_path(c)}",
                {"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
                 "resources": [{"description": "only one field"}]})
    assert_kp_error(r, 400)


def test_registration_older_key_version(kp, svc, acct):
    k = kp.root_key()
    v1 = k["keyVersion"]["id"]
    kp.rotate(k["id"])
    c = crn(acct, "i", "old-version")
    r = svc.post(f"/api/v2/keys/{k['id']}/registrations/{crn_path(c)}", reg_body(keyVersionId=v1))
    assert_kp_error(r, 422, "KEY_VERSION_INVALID")


def test_delete_registration(kp, svc, acct):
    k = kp.root_key()
    c = crn(acct, "i", "gone")
    register(svc, k["id"], c)
    r = svc.delete(f"/api/v2/keys/{k['id']}/registrations/{crn_path(c)}")
    check_status(r, 200, 204)
    assert regs(kp, k["id"])["resources"] == []
    kp.delete_key(k["id"])


def test_deactivate_registration(kp, svc, acct):
    k = kp.root_key()
    c = crn(acct, "i", "deact")
    register(svc, k["id"], c)
    r = svc.post(f"/api/v2/keys/{k['id']}/registrations", params={"action": "deactivate"},
                 body={"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
                       "resources": [{"resourceCrn": c}]})
    check_status(r, 200, 204)
    r = svc.post(f"/api/v2/keys/{k['id']}/registrations", params={"action": "bogus"},
                 body={"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
                       "resources": [{"resourceCrn": c}]})
    assert_kp_error(r, 400)


def test_non_service_caller_forbidden(kp, kp2, svc, acct):
    k = kp.root_key()
    c = crn(acct, "i", "forbidden")
    for client in (kp, kp2):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            body = reg_body(keyVersionId=k["keyVersion"]["id"]) if method != "DELETE" else _NO
            r = client.req(method, f"/api/v2/keys/{k['id']}/registrations/{crn_path(c)}", body)
            assert_kp_error(r, 403, "SERVICE_ONLY_ERR")
        r = client.post(f"/api/v2/keys/{k['id']}/registrations", params={"action": "deactivate"},
                        body={"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
                              "resources": [{"resourceCrn": c}]})
        assert_kp_error(r, 403, "SERVICE_ONLY_ERR")
    assert regs(kp, k["id"])["resources"] == []


def test_register_standard_key(kp, svc, acct):
    k = kp.standard_key()
    r = svc.post(f"/api/v2/keys/{k['id']}/registrations/{crn_path(crn(acct, 'i', 'std'))}", reg_body())
    assert_kp_error(r, 422, "KEY_ROOT_REQ_REG_ERR")


def test_register_inactive_key(kp, svc, acct):
    k = kp.root_key()
    check_status(kp.action(k["id"], "disable"), 204)
    r = svc.post(f"/api/v2/keys/{k['id']}/registrations/{crn_path(crn(acct, 'i', 'susp'))}", reg_body())
    assert_kp_error(r, 422, "KEY_INVALID_STATE_ERR")


@pytest.mark.parametrize("bad", ["not-a-crn", "crn:v1:only:three"])
def test_register_bad_crn(kp, svc, bad):
    k = kp.root_key()
    r = svc.post(f"/api/v2/keys/{k['id']}/registrations/{crn_path(bad)}", reg_body())
    assert_kp_error(r, 400)
    assert regs(kp, k["id"])["resources"] == []


@pytest.mark.parametrize("body", [{}, {"resources": "x"}, [], {"metadata": {"collectionType": REG_INPUT_TYPE,
                                  "collectionTotal": 2}, "resources": [{"preventKeyDeletion": False}]},
                                  {"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
                                   "resources": [{"preventKeyDeletion": "no"}]}])
def test_register_bad_body(kp, svc, acct, body):
    k = kp.root_key()
    r = svc.post(f"/api/v2/keys/{k['id']}/registrations/{crn_path(crn(acct, 'i', 'b'))}", body)
    assert_kp_error(r, 400)
    assert regs(kp, k["id"])["resources"] == []


def test_delete_key_with_registration(kp, svc, acct):
    k = kp.root_key()
    c = crn(acct, "i", "protected")
    register(svc, k["id"], c)
    assert_kp_error(kp.delete(f"/api/v2/keys/{k['id']}"), 409, "PROTECTED_RESOURCE_ERR")
    assert kp.metadata(k["id"])["state"] == 1
    r = kp.delete(f"/api/v2/keys/{k['id']}", params={"force": "true"}, headers={"Prefer": "return=representation"})
    check_status(r, 200)
    assert r.json()["resources"][0]["state"] == 5
    assert c not in {x["resourceCrn"] for x in regs(kp, params={"urlEncodedResourceCRNQuery": c})["resources"]}


def test_prevent_key_deletion(kp, svc, acct):
    k = kp.root_key()
    c = crn(acct, "i", "prevent")
    register(svc, k["id"], c, prevent=True)
    assert_kp_error(kp.delete(f"/api/v2/keys/{k['id']}"), 409, ("PREV_KEY_DEL_ERR", "PROTECTED_RESOURCE_ERR"))
    assert_kp_error(kp.delete(f"/api/v2/keys/{k['id']}", params={"force": "true"}), 409, "PREV_KEY_DEL_ERR")
    assert kp.metadata(k["id"])["state"] == 1
    # once the service lifts the flag, force works
    r = svc.patch(f"/api/v2/keys/{k['id']}/registrations/{crn_path(c)}",
                  {"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
                   "resources": [{"preventKeyDeletion": False}]})
    check_status(r, 200, 204)
    kp.delete_key(k["id"], force=True)


def test_service_id_has_reader_access_only(kp, svc):
    """A storage service's service-to-service authorization to Key Protect grants Reader (IBM Cloud
    s2s authorizations; DESIGN §1: principals are checked against roles). Appendix B: Reader may
    list/read metadata, wrap/unwrap/rewrap and list registrations; everything else needs
    ReaderPlus/Writer/Manager/KeyPurge. KP answers a missing permission with 401 UNAUTHORIZED_ERR
    (§2.1; README "roles in dev mode")."""
    root, std = kp.root_key(), kp.standard_key()
    w = kp.wrap(root["id"], b"x")
    # allowed for Reader
    for r in (svc.get("/api/v2/keys"), svc.head("/api/v2/keys"), svc.get(f"/api/v2/keys/{root['id']}/metadata"),
              svc.get(f"/api/v2/keys/{root['id']}/versions"), svc.get("/api/v2/key_rings"),
              svc.action(root["id"], "wrap", {}), svc.action(root["id"], "unwrap", {"ciphertext": w["ciphertext"]}),
              svc.action(root["id"], "rewrap", {"ciphertext": w["ciphertext"]}),
              svc.get(f"/api/v2/keys/{root['id']}/registrations"), svc.get("/api/v2/keys/registrations")):
        check_status(r, 200)
    # not allowed for Reader
    denied = [
        ("create key (W)", svc.create_key_resp()),
        ("standard key payload (R+)", svc.get(f"/api/v2/keys/{std['id']}")),
        ("rotate (W)", svc.action(root["id"], "rotate")),
        ("disable (M)", svc.action(root["id"], "disable")),
        ("set key policy (M)", svc.put(f"/api/v2/keys/{root['id']}/policies",
                                       {"metadata": {"collectionType": "application/vnd.ibm.kms.policy+json",
                                                     "collectionTotal": 1},
                                        "resources": [{"type": "application/vnd.ibm.kms.policy+json",
                                                       "rotation": {"enabled": True, "interval_month": 3}}]})),
        ("instance policies (M)", svc.get("/api/v2/instance/policies")),
        ("import token (W)", svc.post("/api/v2/import_token", {"expiration": 600})),
        ("create ring (W)", svc.post(f"/api/v2/key_rings/{uniq('svcring')}")),
        ("create alias (W)", svc.post(f"/api/v2/keys/{root['id']}/aliases/{uniq('svcal')}")),
        ("patch key (M)", svc.patch(f"/api/v2/keys/{root['id']}", {"keyRingID": "default"})),
        ("delete key (M)", svc.delete(f"/api/v2/keys/{root['id']}")),
    ]
    wrong = []
    for what, r in denied:
        if r.status_code != 401:
            wrong.append(f"{what}: {r.status_code}{describe(r, 200)}")
        else:
            assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)
    assert not wrong, "service ID exceeded Reader:\n" + "\n".join(wrong)
    md = kp.metadata(root["id"])
    assert md["state"] == 1 and md["keyVersion"]["id"] == root["keyVersion"]["id"]


def test_crn_query_pre_url_encoded(kp, svc, acct):
    """`urlEncodedResourceCRNQuery` is documented as a URL-encoded CRN (KPDOCS CRN query examples
    show the encoded form) and the SDKs' own samples pass the already-encoded value, which the SDK
    encodes again (Node unit test: 'crn%3Av1%3Abluemix%3A...%3A*%3A*'). The service must accept
    both the plain and the pre-encoded form."""
    from urllib.parse import quote
    k = kp.root_key()
    a = crn(acct, "inst1", "enc-a")
    register(svc, k["id"], a)
    plain = crn(acct, "inst1", "*")
    encoded = quote(plain, safe="*")
    for form in (plain, encoded):
        for path in (None, k["id"]):
            got = regs(kp, path, {"urlEncodedResourceCRNQuery": form})["resources"]
            assert [r["resourceCrn"] for r in got] == [a], (form, path)


def test_register_twice_no_duplicates(kp, svc, acct):
    k = kp.root_key()
    c = crn(acct, "i", "twice")
    register(svc, k["id"], c)
    r = svc.post(f"/api/v2/keys/{k['id']}/registrations/{crn_path(c)}", reg_body(desc="again"))
    assert r.status_code in (200, 201, 204, 409), describe(r)
    if r.status_code == 409:
        assert_kp_error(r, 409)
    assert [x["resourceCrn"] for x in regs(kp, k["id"])["resources"]] == [c]


def test_register_on_deleted_key(kp, svc, acct):
    k = kp.root_key()
    kp.delete_key(k["id"])
    r = svc.post(f"/api/v2/keys/{k['id']}/registrations/{crn_path(crn(acct, 'i', 'late'))}", reg_body())
    assert_kp_error(r, (410, 422), ("KEY_DELETED_ERR", "KEY_INVALID_STATE_ERR"))


def test_registration_ops_on_unknown_registration(kp, svc, acct):
    k = kp.root_key()
    c = crn_path(crn(acct, "i", "never"))
    # (PUT "replace" may legitimately create, so it is not checked here)
    for method, body in (("PATCH", reg_body()), ("DELETE", _NO)):
        r = svc.req(method, f"/api/v2/keys/{k['id']}/registrations/{c}", body)
        assert_kp_error(r, 404)
