"""§5 rows 1–5, 7–12 and §6.1–§6.4, §6.7: key CRUD, listing, delete/restore/purge, versions."""
import os

import pytest

from api_helpers import (JSON_CT, KEY_TYPE, RFC3339, UUID_RE, _NO, assert_kp_error, b64, check_status,
                         describe, key_envelope, key_resource, unb64, uniq)


def assert_key_shape(k, extractable=False, name=None):
    assert k["type"] == KEY_TYPE
    assert UUID_RE.match(k["id"]), k
    if name:
        assert k["name"] == name
    assert k["state"] == 1
    assert k["extractable"] is extractable
    assert isinstance(k["crn"], str) and k["crn"].startswith("crn:v1:") and k["crn"].endswith(":key:" + k["id"])
    assert len(k["crn"].split(":")) == 10, k["crn"]
    assert k["keyRingID"] == "default" or isinstance(k["keyRingID"], str)
    assert RFC3339.match(k["creationDate"]), k["creationDate"]
    assert RFC3339.match(k["lastUpdateDate"]), k
    assert isinstance(k["createdBy"], str) and k["createdBy"]
    assert UUID_RE.match(k["keyVersion"]["id"]), k
    assert RFC3339.match(k["keyVersion"]["creationDate"]), k
    assert k["dualAuthDelete"]["enabled"] in (True, False)
    assert k["deleted"] is False
    assert "imported" in k
    assert k["algorithmBitSize"] == 256 or "algorithmBitSize" not in k


# --- create / import ----------------------------------------------------------------------

def test_create_root_key(kp):
    name = uniq("root")
    r = kp.create_key_resp(name, False)
    check_status(r, 201)
    body = r.json()
    assert body["metadata"] == {"collectionType": KEY_TYPE, "collectionTotal": 1}
    k = body["resources"][0]
    assert_key_shape(k, False, name)
    assert k["keyRingID"] == "default"
    assert k["imported"] is False
    assert "payload" not in k


def test_create_root_key_prefer_representation_has_no_payload(kp):
    r = kp.create_key_resp(extractable=False, prefer="return=representation")
    check_status(r, 201)
    assert "payload" not in r.json()["resources"][0]


def test_create_key_prefer_minimal(kp):
    r = kp.create_key_resp(prefer="return=minimal")
    check_status(r, 201)


def test_create_standard_key_representation(kp):
    name = uniq("std")
    r = kp.create_key_resp(name, True, prefer="return=representation")
    check_status(r, 201)
    k = r.json()["resources"][0]
    assert_key_shape(k, True, name)
    assert len(unb64(k["payload"])) == 32
    got = kp.get_key(k["id"])
    assert got["payload"] == k["payload"]
    md = kp.metadata(k["id"])
    assert "payload" not in md
    assert md["id"] == k["id"]


def test_create_with_all_optional_fields(kp):
    name = uniq("full")
    exp = "2099-01-01T00:00:00Z"
    k = kp.create_key(name, False, description="a test root key", expirationDate=exp,
                      aliases=[uniq("al")], tags=["t1", "t2"])
    assert k["description"] == "a test root key"
    assert k["expirationDate"] == exp
    assert sorted(k["tags"]) == ["t1", "t2"]
    assert len(k["aliases"]) == 1


@pytest.mark.parametrize("size", [16, 24, 32])
def test_import_root_key(kp, size):
    material = os.urandom(size)
    r = kp.create_key_resp(extractable=False, payload=b64(material))
    check_status(r, 201)
    k = r.json()["resources"][0]
    assert k["imported"] is True
    assert "payload" not in k
    w = kp.wrap(k["id"], b"hello")
    assert unb64(kp.unwrap(k["id"], w["ciphertext"])["plaintext"]) == b"hello"


@pytest.mark.parametrize("size", [0, 1, 15, 17, 31, 33, 64])
def test_import_root_key_bad_size(kp, size):
    r = kp.create_key_resp(extractable=False, payload=b64(os.urandom(size)))
    assert_kp_error(r, 400)


@pytest.mark.parametrize("size", [1, 17, 7500])
def test_import_standard_key(kp, size):
    material = os.urandom(size)
    r = kp.create_key_resp(extractable=True, payload=b64(material), prefer="return=representation")
    check_status(r, 201)
    k = r.json()["resources"][0]
    assert k["imported"] is True
    assert unb64(kp.get_key(k["id"])["payload"]) == material


def test_import_standard_key_too_big(kp):
    r = kp.create_key_resp(extractable=True, payload=b64(os.urandom(7501)))
    assert_kp_error(r, 400)


@pytest.mark.parametrize("payload", ["!!!not base64!!!", "a b c", 12, ["x"]])
def test_import_bad_payload(kp, payload):
    assert_kp_error(kp.create_key_resp(extractable=True, payload=payload), 400)


@pytest.mark.parametrize("field,value", [
    ("name", "a"), ("name", "n" * 91), ("name", ""), ("description", "d" * 241),
    ("tags", ["t"] * 31), ("tags", ["x" * 31]), ("tags", ["bad<tag"]), ("tags", ["a,b"]),
    ("expirationDate", "not-a-date"), ("extractable", "yes"), ("name", 42),
])
def test_create_invalid_field(kp, field, value):
    res = key_resource()
    res[field] = value
    assert_kp_error(kp.post("/api/v2/keys", key_envelope(res)), 400)


def test_create_missing_name(kp):
    res = key_resource()
    del res["name"]
    assert_kp_error(kp.post("/api/v2/keys", key_envelope(res)), 400)


def test_create_collection_total_mismatch(kp):
    r = kp.post("/api/v2/keys", key_envelope(key_resource(), total=2))
    assert_kp_error(r, 400, "COLLECTION_TOTAL_MISMATCH_ERR")


@pytest.mark.parametrize("body", [_NO, {}, {"resources": []}, {"metadata": {}}, None])
def test_create_without_resources(kp, body):
    assert_kp_error(kp.post("/api/v2/keys", body), 400, ("BAD_BODY_ERR", "NO_BODY_ERR",
                                                         "COLLECTION_TOTAL_MISMATCH_ERR",
                                                         "NUM_COLLECTION_RESOURCE_ERR"))


def test_create_content_types(kp):
    import json
    for ct in (None, "application/vnd.ibm.kms.key+json", "application/json; charset=utf-8"):
        r = kp.post("/api/v2/keys", raw=json.dumps(key_envelope(key_resource())).encode(),
                    headers={"Content-Type": ct})
        check_status(r, 201)


# --- keys_with_policy_overrides -------------------------------------------------------------

def test_create_with_policy_overrides(kp):
    r = kp.create_key_resp(path="/api/v2/keys_with_policy_overrides",
                           rotation={"enabled": True, "interval_month": 6},
                           dualAuthDelete={"enabled": False})
    check_status(r, 201)
    k = r.json()["resources"][0]
    assert k["state"] == 1
    pol = kp.get(f"/api/v2/keys/{k['id']}/policies", params={"policy": "rotation"})
    check_status(pol, 200)
    res = pol.json()["resources"]
    assert res and res[0]["rotation"]["interval_month"] == 6, describe(pol)
    md = kp.metadata(k["id"])
    assert md["rotation"]["interval_month"] == 6
    assert md["dualAuthDelete"]["enabled"] is False


def test_overrides_dual_auth(kp):
    r = kp.create_key_resp(path="/api/v2/keys_with_policy_overrides", dualAuthDelete={"enabled": True})
    check_status(r, 201)
    assert r.json()["resources"][0]["dualAuthDelete"]["enabled"] is True


def test_overrides_rotation_on_standard_key(kp):
    r = kp.create_key_resp(extractable=True, path="/api/v2/keys_with_policy_overrides",
                           rotation={"enabled": True, "interval_month": 3})
    assert_kp_error(r, 400, "KEY_ROOT_REQ_ERR")


@pytest.mark.parametrize("month", [-1, 0, 13])
def test_overrides_bad_interval(kp, month):
    r = kp.create_key_resp(path="/api/v2/keys_with_policy_overrides",
                           rotation={"enabled": True, "interval_month": month})
    assert_kp_error(r, 400, "INVALID_FIELD_ERR")


def test_overrides_standard_key_plain(kp):
    r = kp.create_key_resp(extractable=True, path="/api/v2/keys_with_policy_overrides",
                           prefer="return=representation")
    check_status(r, 201)
    assert r.json()["resources"][0]["extractable"] is True


# --- get / metadata ------------------------------------------------------------------------

def test_get_key_root_and_unknown(kp):
    k = kp.root_key()
    got = kp.get(f"/api/v2/keys/{k['id']}")
    check_status(got, 200)
    assert JSON_CT.match(got.headers["content-type"]), describe(got)
    body = got.json()
    assert body["metadata"]["collectionType"] == KEY_TYPE and body["metadata"]["collectionTotal"] == 1
    assert "payload" not in body["resources"][0]
    r = kp.get("/api/v2/keys/00000000-0000-4000-8000-000000000000")
    res = assert_kp_error(r, 404, "KEY_NOT_FOUND_ERR")
    assert "KEY_NOT_FOUND_ERR" in res["errorMsg"]
    assert_kp_error(kp.get("/api/v2/keys/00000000-0000-4000-8000-000000000000/metadata"), 404,
                    "KEY_NOT_FOUND_ERR")


def test_get_key_from_other_instance_not_visible(kp, server_factory):
    k = kp.root_key()
    other = server_factory().client()
    assert_kp_error(other.get(f"/api/v2/keys/{k['id']}"), 404, "KEY_NOT_FOUND_ERR")


# --- list / HEAD -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def listing(kp):
    """A ring with a known set of keys: 3 root (one disabled, one deleted), 2 standard."""
    ring = kp.create_ring()
    keys = {
        "alpha1": kp.root_key(name="Alpha-one-" + uniq("x"), ring=ring),
        "alpha2": kp.root_key(name="alpha-two-" + uniq("x"), ring=ring),
        "beta": kp.root_key(name="beta-" + uniq("x"), ring=ring),
        "std1": kp.standard_key(name="gamma-" + uniq("x"), ring=ring),
        "std2": kp.standard_key(name="delta-" + uniq("x"), ring=ring),
    }
    check_status(kp.action(keys["beta"]["id"], "disable"), 204)
    gone = kp.root_key(name="gone-" + uniq("x"), ring=ring)
    kp.delete_key(gone["id"])
    keys["gone"] = gone
    return ring, keys


def ids(resources):
    return {k["id"] for k in resources}


def test_list_default_excludes_deleted(kp, listing):
    ring, keys = listing
    r = kp.get("/api/v2/keys", headers={"X-Kms-Key-Ring": ring})
    check_status(r, 200)
    assert JSON_CT.match(r.headers["content-type"]), describe(r)
    body = r.json()
    assert body["metadata"]["collectionType"] == KEY_TYPE
    assert body["metadata"]["collectionTotal"] == len(body["resources"]) == 5
    assert ids(body["resources"]) == {keys[n]["id"] for n in ("alpha1", "alpha2", "beta", "std1", "std2")}
    for k in body["resources"]:
        assert "payload" not in k


def test_list_empty_state_accepted(kp, listing):
    ring, keys = listing
    got = kp.list_keys({"state": ""}, ring=ring)
    assert len(got) == 5


def test_list_state_filter(kp, listing):
    ring, keys = listing
    assert ids(kp.list_keys({"state": "5"}, ring=ring)) == {keys["gone"]["id"]}
    assert ids(kp.list_keys({"state": "2"}, ring=ring)) == {keys["beta"]["id"]}
    assert len(kp.list_keys({"state": "1,5"}, ring=ring)) == 5
    assert len(kp.list_keys({"state": "0,1,2,3,5"}, ring=ring)) == 6


@pytest.mark.parametrize("state", ["4", "9", "abc", "1,x", "-1"])
def test_list_bad_state(kp, state):
    assert_kp_error(kp.get("/api/v2/keys", params={"state": state}), 400)


def test_list_extractable(kp, listing):
    ring, keys = listing
    assert ids(kp.list_keys({"extractable": "true"}, ring=ring)) == {keys["std1"]["id"], keys["std2"]["id"]}
    assert len(kp.list_keys({"extractable": "false"}, ring=ring)) == 3
    assert_kp_error(kp.get("/api/v2/keys", params={"extractable": "maybe"}), 400)


def test_list_limit_offset(kp, listing):
    ring, keys = listing
    all_ = kp.list_keys({"sort": "id"}, ring=ring)
    page1 = kp.list_keys({"limit": "2", "offset": "0", "sort": "id"}, ring=ring)
    page2 = kp.list_keys({"limit": "2", "offset": "2", "sort": "id"}, ring=ring)
    page3 = kp.list_keys({"limit": "2", "offset": "4", "sort": "id"}, ring=ring)
    assert [k["id"] for k in page1 + page2 + page3] == [k["id"] for k in all_]
    assert len(page1) == 2 and len(page3) == 1
    assert kp.list_keys({"offset": "100"}, ring=ring) == []
    r = kp.get("/api/v2/keys", params={"limit": "5000"})
    check_status(r, 200)


@pytest.mark.parametrize("params", [{"limit": "-1"}, {"limit": "abc"}, {"limit": "0"}, {"limit": "5001"},
                                    {"offset": "-1"}, {"offset": "abc"},
                                    {"offset": "99999999999999999999"}])
def test_list_bad_limit_offset(kp, params):
    assert_kp_error(kp.get("/api/v2/keys", params=params), 400, "INVALID_QUERY_PARAM_ERR")


def test_list_sort(kp, listing):
    ring, keys = listing
    asc = [k["id"] for k in kp.list_keys({"sort": "id"}, ring=ring)]
    assert asc == sorted(asc)
    desc = [k["id"] for k in kp.list_keys({"sort": "-id"}, ring=ring)]
    assert desc == sorted(asc, reverse=True)
    default = [k["id"] for k in kp.list_keys(ring=ring)]
    assert default == asc, "default sort is id"
    by_state = [k["state"] for k in kp.list_keys({"sort": "-state,id"}, ring=ring)]
    assert by_state == sorted(by_state, reverse=True)
    ext = [k["extractable"] for k in kp.list_keys({"sort": "extractable"}, ring=ring)]
    assert ext == sorted(ext)
    for s in ("creationDate", "-lastUpdateDate", "imported", "lastRotateDate", "deletionDate", "expirationDate"):
        kp.list_keys({"sort": s}, ring=ring)


@pytest.mark.parametrize("sort", ["bogus", "-", "name", "id,bogus", "--id"])
def test_list_bad_sort(kp, sort):
    assert_kp_error(kp.get("/api/v2/keys", params={"sort": sort}), 400)


def test_list_search(kp, listing):
    ring, keys = listing
    a = {keys["alpha1"]["id"], keys["alpha2"]["id"]}
    assert ids(kp.list_keys({"search": "alpha"}, ring=ring)) == a
    assert ids(kp.list_keys({"search": "ALPHA"}, ring=ring)) == a, "search is case-insensitive"
    assert ids(kp.list_keys({"search": "name:alpha"}, ring=ring)) == a
    assert ids(kp.list_keys({"search": "exact:" + keys["beta"]["name"]}, ring=ring)) == {keys["beta"]["id"]}
    assert ids(kp.list_keys({"search": "exact:beta"}, ring=ring)) == set()
    notalpha = ids(kp.list_keys({"search": "not:alpha"}, ring=ring))
    assert notalpha == {keys[n]["id"] for n in ("beta", "std1", "std2")}
    assert ids(kp.list_keys({"search": "escape:alpha"}, ring=ring)) == a
    assert ids(kp.list_keys({"search": "not:exact:" + keys["beta"]["name"]}, ring=ring)) == {
        keys[n]["id"] for n in ("alpha1", "alpha2", "std1", "std2")}
    # UUID search finds that key (first)
    got = kp.list_keys({"search": keys["std1"]["id"]}, ring=ring)
    assert got and got[0]["id"] == keys["std1"]["id"]


def test_list_search_alias(kp):
    ring = kp.create_ring()
    al = uniq("findme")
    k = kp.root_key(ring=ring, aliases=[al])
    kp.root_key(ring=ring)
    assert ids(kp.list_keys({"search": "alias:" + al}, ring=ring)) == {k["id"]}
    assert ids(kp.list_keys({"search": al}, ring=ring)) == {k["id"]}


def test_list_filter(kp, listing):
    ring, keys = listing
    assert ids(kp.list_keys({"filter": "state=2"}, ring=ring)) == {keys["beta"]["id"]}
    assert ids(kp.list_keys({"filter": "extractable=true"}, ring=ring)) == {keys["std1"]["id"], keys["std2"]["id"]}
    assert ids(kp.list_keys({"filter": "state=1 extractable=false"}, ring=ring)) == {
        keys["alpha1"]["id"], keys["alpha2"]["id"]}
    assert len(kp.list_keys({"filter": 'creationDate=gt:"2000-01-01T00:00:00Z"'}, ring=ring)) == 5
    assert kp.list_keys({"filter": 'creationDate=lt:"2000-01-01T00:00:00Z"'}, ring=ring) == []
    assert ids(kp.list_keys({"filter": "state=5"}, ring=ring)) == {keys["gone"]["id"]}
    assert len(kp.list_keys({"filter": "expirationDate=none"}, ring=ring)) == 5


def test_list_filter_go_client_forms(kp, listing):
    """keyprotect-go-client FilterQueryBuilder output: leading space, `state=a,b` comma lists,
    RFC3339Nano dates in double quotes, `prop="date"` for equality (listkeys.go)."""
    ring, keys = listing
    assert ids(kp.list_keys({"filter": " state=1,2"}, ring=ring)) == {
        keys[n]["id"] for n in ("alpha1", "alpha2", "beta", "std1", "std2")}
    assert ids(kp.list_keys({"filter": " state=2,5 extractable=false"}, ring=ring)) == {
        keys["beta"]["id"], keys["gone"]["id"]}
    assert len(kp.list_keys({"filter": ' creationDate=gte:"2000-01-01T00:00:00.123456789Z"'}, ring=ring)) == 5
    assert kp.list_keys({"filter": ' creationDate=lt:"2000-01-01T00:00:00.5Z"'}, ring=ring) == []
    created = keys["beta"]["creationDate"]
    eq = kp.list_keys({"filter": f' creationDate="{created}"', "state": "0,1,2,3,5"}, ring=ring)
    assert keys["beta"]["id"] in ids(eq) and all(k["creationDate"] == created for k in eq)


def test_list_search_go_client_trailing_comma(kp, listing):
    """keyprotect-go-client ListKeys sends search as fmt.Sprint(search, ",") — i.e. with a trailing
    comma (listkeys.go); the service must treat "alpha," like "alpha"."""
    ring, keys = listing
    a = {keys["alpha1"]["id"], keys["alpha2"]["id"]}
    assert ids(kp.list_keys({"search": "alpha,"}, ring=ring)) == a
    assert ids(kp.list_keys({"search": "exact:" + keys["beta"]["name"] + ","}, ring=ring)) == {keys["beta"]["id"]}


@pytest.mark.parametrize("params", [{"filter": "garbage"}, {"filter": "nosuchprop=1"},
                                    {"filter": "state=abc"}, {"filter": 'creationDate=gt:"yesterday"'},
                                    {"filter": "state=1", "state": "1"},
                                    {"filter": "state=1 state=2 state=3 state=5"},  # > 3 per property
                                    {"filter": "extractable=true", "extractable": "true"}])
def test_list_bad_filter(kp, params):
    assert_kp_error(kp.get("/api/v2/keys", params=params), 400)


def test_list_unknown_ring(kp):
    r = kp.get("/api/v2/keys", headers={"X-Kms-Key-Ring": uniq("nosuchring")})
    assert r.status_code in (200, 404), describe(r)
    if r.status_code == 200:
        assert r.json()["resources"] == []
    else:
        assert_kp_error(r, 404)


def test_head_key_total(kp, listing):
    ring, keys = listing
    r = kp.head("/api/v2/keys", headers={"X-Kms-Key-Ring": ring})
    check_status(r, 200)
    assert r.headers.get("Key-Total") == "5", describe(r)
    assert r.content == b""
    r = kp.head("/api/v2/keys", headers={"X-Kms-Key-Ring": ring}, params={"state": "1,5"})
    assert r.headers.get("Key-Total") == "5"
    r = kp.head("/api/v2/keys", headers={"X-Kms-Key-Ring": ring}, params={"state": "0,1,2,3,5"})
    assert r.headers.get("Key-Total") == "6"
    r = kp.head("/api/v2/keys", headers={"X-Kms-Key-Ring": ring}, params={"extractable": "true"})
    assert r.headers.get("Key-Total") == "2"
    r = kp.head("/api/v2/keys", headers={"X-Kms-Key-Ring": ring}, params={"filter": "state=2"})
    assert r.headers.get("Key-Total") == "1"
    r = kp.head("/api/v2/keys", headers={"X-Kms-Key-Ring": ring}, params={"state": ""})
    assert r.headers.get("Key-Total") == "5"


def test_head_key_total_instance_wide(kp):
    before = int(check_status(kp.head("/api/v2/keys"), 200).headers["Key-Total"])
    kp.root_key()
    after = int(kp.head("/api/v2/keys").headers["Key-Total"])
    assert after == before + 1


def test_head_bad_params(kp):
    r = kp.head("/api/v2/keys", params={"state": "abc"})
    assert r.status_code == 400, describe(r)


# --- patch (move ring) ----------------------------------------------------------------------

@pytest.mark.parametrize("member", ["keyRingID", "KeyRingID", "keyringid"])
def test_patch_move_ring(kp, member):
    ring = kp.create_ring()
    k = kp.root_key()
    r = kp.patch(f"/api/v2/keys/{k['id']}", {member: ring}, headers={"X-Kms-Key-Ring": "default"})
    check_status(r, 200)
    body = r.json()
    assert body["metadata"]["collectionType"] == KEY_TYPE
    assert body["resources"][0]["keyRingID"] == ring
    assert kp.metadata(k["id"])["keyRingID"] == ring
    assert k["id"] in ids(kp.list_keys(ring=ring))
    assert k["id"] not in ids(kp.list_keys({"limit": "5000"}, ring="default"))


def test_patch_to_unknown_ring(kp):
    k = kp.root_key()
    r = kp.patch(f"/api/v2/keys/{k['id']}", {"keyRingID": uniq("nosuch")})
    assert_kp_error(r, (400, 404, 409))
    assert kp.metadata(k["id"])["keyRingID"] == "default"


@pytest.mark.parametrize("body", [{"name": "renamed"}, {}, {"keyRingID": 5}, [], "x"])
def test_patch_bad_body(kp, body):
    k = kp.root_key()
    assert_kp_error(kp.patch(f"/api/v2/keys/{k['id']}", body), 400)
    assert kp.metadata(k["id"])["name"] == k["name"]


def test_patch_unknown_key(kp):
    r = kp.patch("/api/v2/keys/00000000-0000-4000-8000-000000000000", {"keyRingID": "default"})
    assert_kp_error(r, 404, "KEY_NOT_FOUND_ERR")


# --- delete / restore / purge ---------------------------------------------------------------

def test_delete_minimal_204(kp):
    k = kp.root_key()
    r = kp.delete_key(k["id"], prefer="return=minimal", expect=(204,))
    assert r.content == b""
    md = kp.metadata(k["id"])
    assert md["state"] == 5 and md["deleted"] is True


def test_delete_default_prefer(kp):
    k = kp.root_key()
    r = kp.delete_key(k["id"], expect=(200, 204))
    if r.status_code == 200:
        assert r.json()["resources"][0]["state"] == 5
    else:
        assert r.content == b""


def test_delete_representation_200(kp):
    k = kp.root_key()
    r = kp.delete_key(k["id"], prefer="return=representation", expect=(200,))
    body = r.json()
    assert body["metadata"]["collectionType"] == KEY_TYPE
    d = body["resources"][0]
    assert d["id"] == k["id"] and d["state"] == 5 and d["deleted"] is True
    for f in ("deletionDate", "restoreExpirationDate", "purgeAllowedFrom", "purgeScheduledOn"):
        assert RFC3339.match(d[f]), (f, d)
    assert isinstance(d["deletedBy"], str)
    assert d["restoreAllowed"] is True
    assert d["purgeAllowed"] is True  # --purge-delay 0


def test_delete_twice_410(kp):
    k = kp.root_key()
    kp.delete_key(k["id"])
    r = kp.delete(f"/api/v2/keys/{k['id']}")
    assert_kp_error(r, 410, "KEY_DELETED_ERR")
    r = kp.delete(f"/api/v2/keys/{k['id']}", params={"force": "true"})
    assert_kp_error(r, 410, "KEY_DELETED_ERR")


def test_delete_unknown_404(kp):
    assert_kp_error(kp.delete("/api/v2/keys/00000000-0000-4000-8000-000000000000"), 404, "KEY_NOT_FOUND_ERR")


def test_delete_force_plain_key(kp):
    k = kp.root_key()
    kp.delete_key(k["id"], force=True, prefer="return=minimal", expect=(204,))


def test_deleted_key_still_readable(kp):
    k = kp.standard_key()
    kp.delete_key(k["id"])
    got = kp.get_key(k["id"])
    assert got["state"] == 5 and got["deleted"] is True


def test_restore(kp):
    k = kp.root_key()
    w = kp.wrap(k["id"], b"before delete")
    kp.delete_key(k["id"])
    r = kp.post(f"/api/v2/keys/{k['id']}/restore")
    check_status(r, 201)
    body = r.json()
    assert body["metadata"]["collectionType"] == KEY_TYPE
    res = body["resources"][0]
    assert res["id"] == k["id"] and res["state"] == 1 and res["deleted"] is False
    assert unb64(kp.unwrap(k["id"], w["ciphertext"])["plaintext"]) == b"before delete"
    assert kp.metadata(k["id"])["state"] == 1


def test_restore_keeps_policies(kp):
    r = kp.create_key_resp(path="/api/v2/keys_with_policy_overrides",
                           rotation={"enabled": True, "interval_month": 4})
    k = check_status(r, 201).json()["resources"][0]
    kp.delete_key(k["id"])
    check_status(kp.post(f"/api/v2/keys/{k['id']}/restore"), 201)
    pol = kp.get(f"/api/v2/keys/{k['id']}/policies", params={"policy": "rotation"}).json()
    assert pol["resources"][0]["rotation"]["interval_month"] == 4


def test_restore_active_key_409(kp):
    k = kp.root_key()
    assert_kp_error(kp.post(f"/api/v2/keys/{k['id']}/restore"), 409, "KEY_ACTION_INVALID_STATE_ERR")


def test_restore_unknown_404(kp):
    assert_kp_error(kp.post("/api/v2/keys/00000000-0000-4000-8000-000000000000/restore"), 404,
                    "KEY_NOT_FOUND_ERR")


def test_restore_imported_key(kp):
    material = os.urandom(32)
    k = check_status(kp.create_key_resp(payload=b64(material)), 201).json()["resources"][0]
    w = kp.wrap(k["id"], b"x")
    kp.delete_key(k["id"])
    # no body needed since 2021 (§6.4); a legacy body with the payload is also accepted
    r = kp.post(f"/api/v2/keys/{k['id']}/restore")
    if r.status_code != 201:
        r = kp.post(f"/api/v2/keys/{k['id']}/restore", key_envelope({"payload": b64(material)}))
    check_status(r, 201)
    assert unb64(kp.unwrap(k["id"], w["ciphertext"])["plaintext"]) == b"x"


def test_purge(kp):
    k = kp.root_key()
    kp.delete_key(k["id"])
    r = kp.delete(f"/api/v2/keys/{k['id']}/purge", headers={"Prefer": "return=representation"})
    check_status(r, 200)
    body = r.json()
    assert body["resources"][0]["id"] == k["id"] and body["resources"][0]["state"] == 5
    assert_kp_error(kp.get(f"/api/v2/keys/{k['id']}"), 404, "KEY_NOT_FOUND_ERR")
    assert k["id"] not in ids(kp.list_keys({"state": "0,1,2,3,5", "limit": "5000"}))
    assert_kp_error(kp.delete(f"/api/v2/keys/{k['id']}/purge"), 404, "KEY_NOT_FOUND_ERR")
    assert_kp_error(kp.post(f"/api/v2/keys/{k['id']}/restore"), 404, "KEY_NOT_FOUND_ERR")


def test_purge_minimal(kp):
    k = kp.root_key()
    kp.delete_key(k["id"])
    r = kp.delete(f"/api/v2/keys/{k['id']}/purge", headers={"Prefer": "return=minimal"})
    check_status(r, 204)


def test_purge_by_second_admin(kp, kp2):
    """README: in dev mode both administrators hold every role, KeyPurge included."""
    k = kp.root_key()
    kp.delete_key(k["id"])
    check_status(kp2.delete(f"/api/v2/keys/{k['id']}/purge"), 200, 204)
    assert_kp_error(kp.get(f"/api/v2/keys/{k['id']}"), 404, "KEY_NOT_FOUND_ERR")


def test_purge_active_409(kp):
    k = kp.root_key()
    assert_kp_error(kp.delete(f"/api/v2/keys/{k['id']}/purge"), 409, "KEY_ACTION_INVALID_STATE_ERR")
    assert kp.metadata(k["id"])["state"] == 1



# --- versions ---------------------------------------------------------------------------------

def test_versions_newest_first(kp):
    k = kp.root_key()
    v0 = kp.versions(k["id"])
    assert [v["id"] for v in v0] == [k["keyVersion"]["id"]]
    kp.rotate(k["id"])
    kp.rotate(k["id"])
    r = kp.get(f"/api/v2/keys/{k['id']}/versions", params={"totalCount": "true"})
    check_status(r, 200)
    assert JSON_CT.match(r.headers["content-type"]), describe(r)
    body = r.json()
    assert body["metadata"]["collectionType"] == "application/vnd.ibm.kms.key.version+json"
    assert body["metadata"]["collectionTotal"] == 3
    assert body["metadata"]["totalCount"] == 3
    vs = body["resources"]
    assert len({v["id"] for v in vs}) == 3
    for v in vs:
        assert UUID_RE.match(v["id"]) and RFC3339.match(v["creationDate"])
    md = kp.metadata(k["id"])
    assert vs[0]["id"] == md["keyVersion"]["id"], "newest first"
    assert vs[-1]["id"] == k["keyVersion"]["id"], "oldest last"
    assert RFC3339.match(md["lastRotateDate"])
    dates = [v["creationDate"] for v in vs]
    assert dates == sorted(dates, reverse=True)
    page = kp.versions(k["id"], {"limit": "1", "offset": "1"})
    assert [v["id"] for v in page] == [vs[1]["id"]]


def test_versions_without_total_count(kp):
    k = kp.root_key()
    body = check_status(kp.get(f"/api/v2/keys/{k['id']}/versions"), 200).json()
    assert "totalCount" not in body["metadata"]


@pytest.mark.parametrize("limit", ["0", "5001", "-1", "abc"])
def test_versions_bad_limit(kp, limit):
    k = kp.root_key()
    assert_kp_error(kp.get(f"/api/v2/keys/{k['id']}/versions", params={"limit": limit}), 400,
                    "INVALID_QUERY_PARAM_ERR")


def test_versions_deleted_key_all_states(kp):
    k = kp.root_key()
    kp.delete_key(k["id"])
    r = kp.get(f"/api/v2/keys/{k['id']}/versions", params={"allKeyStates": "true"})
    check_status(r, 200)
    assert len(r.json()["resources"]) == 1


def test_list_default_limit_200(server_factory):
    from concurrent.futures import ThreadPoolExecutor
    srv = server_factory()
    c = srv.client()
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda i: srv.client().root_key(name=f"bulk-{i:03d}"), range(205)))
    body = check_status(c.get("/api/v2/keys"), 200).json()
    assert len(body["resources"]) == 200 and body["metadata"]["collectionTotal"] == 200
    assert len(c.list_keys({"limit": "5000"})) == 205
    assert len(c.list_keys({"limit": "10", "offset": "200"})) == 5
    assert c.head("/api/v2/keys").headers["Key-Total"] == "205"


def test_dates_move_with_changes(kp):
    import time as _t
    k = kp.root_key()
    assert "lastRotateDate" not in k or k["lastRotateDate"] is None
    _t.sleep(1.1)
    kp.rotate(k["id"])
    md = kp.metadata(k["id"])
    assert md["lastRotateDate"] > k["creationDate"]
    assert md["lastUpdateDate"] > k["lastUpdateDate"]
    assert md["keyVersion"]["creationDate"] > k["keyVersion"]["creationDate"]
    assert md["creationDate"] == k["creationDate"]


def test_create_field_limits_inclusive(kp):
    """The documented limits are inclusive: name 2 and 90 chars, description 240, 30 tags of 30 chars."""
    for name in ("ab", "n" * 90):
        check_status(kp.create_key_resp(name=name), 201)
    k = check_status(kp.create_key_resp(description="d" * 240, tags=[f"{i:02d}" + "t" * 28 for i in range(30)]), 201)
    res = k.json()["resources"][0]
    assert len(res["description"]) == 240 and len(res["tags"]) == 30


def test_rotate_imported_requires_payload_query_form(kp):
    k = check_status(kp.create_key_resp(payload=b64(os.urandom(16))), 201).json()["resources"][0]
    assert_kp_error(kp.action(k["id"], "rotate", form="query"), 400, "KEY_PAYLOAD_REQ_ERR")
    check_status(kp.action(k["id"], "rotate", {"payload": b64(os.urandom(16))}, form="query"), 204)
