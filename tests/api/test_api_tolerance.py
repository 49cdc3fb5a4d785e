"""§3 body/header tolerance and §4.1 response Content-Type."""
import json

import pytest

from api_helpers import (JSON_CT, KEY_TYPE, POLICY_TYPE, b64, check_status, describe,
                         key_envelope, key_resource, uniq)

# (body kwargs for Client.req) — every way the real clients send "no body" (§3)
NO_BODY_VARIANTS = {
    "absent-no-ct": dict(raw=None),
    "empty-json-ct": dict(raw=b"", headers={"Content-Type": "application/json"}),
    "empty-object": dict(raw=b"{}", headers={"Content-Type": "application/json"}),
    "null": dict(raw=b"null", headers={"Content-Type": "application/json"}),
    "null-no-ct": dict(raw=b"null"),
    "object-no-ct": dict(raw=b"{}"),
    "vnd-action-ct": dict(raw=b"", headers={"Content-Type": "application/vnd.ibm.kms.key_action+json"}),
}


def _post(kp, path, variant, params=None):
    kw = dict(NO_BODY_VARIANTS[variant])
    return kp.req("POST", path, params=params, **kw)


@pytest.mark.parametrize("variant", list(NO_BODY_VARIANTS))
@pytest.mark.parametrize("form", ["path", "query"])
def test_no_body_actions_tolerate_empty_bodies(kp, variant, form):
    k = kp.root_key()
    kid = k["id"]

    def act(name):
        if form == "path":
            return _post(kp, f"/api/v2/keys/{kid}/actions/{name}", variant)
        return _post(kp, f"/api/v2/keys/{kid}", variant, params={"action": name})

    check_status(act("disable"), 204)
    check_status(act("enable"), 204)
    check_status(act("rotate"), 204)
    if form == "path":
        check_status(act("sync"), 204)
    r = act("wrap")
    check_status(r, 200)
    assert "plaintext" in r.json() and "ciphertext" in r.json()
    # dual auth set/unset
    check_status(kp.put(f"/api/v2/keys/{kid}/policies",
                        {"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
                         "resources": [{"type": POLICY_TYPE, "dualAuthDelete": {"enabled": True}}]}), 200)
    check_status(act("setKeyForDeletion"), 204)
    check_status(act("unsetKeyForDeletion"), 204)
    check_status(act("setKeyForDeletion"), 204)
    kp.server.client(kp.server.second_apikey).delete_key(kid)
    if form == "path":
        r = _post(kp, f"/api/v2/keys/{kid}/restore", variant)
    else:
        r = act("restore")
    check_status(r, 201)


@pytest.mark.parametrize("variant", ["absent-no-ct", "empty-object", "null"])
def test_no_body_endpoints_tolerate_empty_bodies(kp, variant):
    ring = uniq("ring")
    check_status(_post(kp, f"/api/v2/key_rings/{ring}", variant), 201)
    k = kp.root_key()
    check_status(_post(kp, f"/api/v2/keys/{k['id']}/aliases/{uniq('al')}", variant), 200, 201)


@pytest.mark.parametrize("ct", [None, "application/json", "application/vnd.ibm.kms.key+json",
                                "application/json;charset=UTF-8"])
def test_create_any_content_type(kp, ct):
    body = json.dumps(key_envelope(key_resource())).encode()
    r = kp.post("/api/v2/keys", raw=body, headers={"Content-Type": ct})
    check_status(r, 201)


@pytest.mark.parametrize("ct", [None, "application/vnd.ibm.kms.key_action_wrap+json", "application/json"])
def test_wrap_any_content_type(kp, ct):
    k = kp.root_key()
    r = kp.post(f"/api/v2/keys/{k['id']}/actions/wrap", raw=json.dumps({"plaintext": b64(b"hi")}).encode(),
                headers={"Content-Type": ct})
    check_status(r, 200)
    ct2 = json.dumps({"ciphertext": r.json()["ciphertext"]}).encode()
    check_status(kp.post(f"/api/v2/keys/{k['id']}/actions/unwrap", raw=ct2, headers={"Content-Type": ct}), 200)


def test_policy_put_without_content_type(kp):
    k = kp.root_key()
    body = json.dumps({"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
                       "resources": [{"type": POLICY_TYPE, "rotation": {"interval_month": 4}}]}).encode()
    check_status(kp.put(f"/api/v2/keys/{k['id']}/policies", raw=body), 200)
    check_status(kp.post("/api/v2/import_token", raw=json.dumps({"expiration": 600}).encode()), 200, 201)


def test_case_insensitive_member_names_on_create(kp):
    name = uniq("ci")
    body = {"Metadata": {"CollectionType": KEY_TYPE, "CollectionTotal": 1},
            "Resources": [{"Type": KEY_TYPE, "Name": name, "Extractable": False, "Tags": ["go-style"],
                           "Description": "go client casing"}]}
    r = kp.post("/api/v2/keys", body)
    check_status(r, 201)
    k = r.json()["resources"][0]
    assert k["name"] == name
    assert k["tags"] == ["go-style"]
    assert k["description"] == "go client casing"
    assert "tags" in kp.metadata(k["id"])


def test_go_tags_member(kp):
    r = kp.post("/api/v2/keys", key_envelope(key_resource(Tags=["T1", "T2"])))
    check_status(r, 201)
    assert sorted(r.json()["resources"][0]["tags"]) == ["T1", "T2"]


def test_case_insensitive_on_actions_and_patch(kp):
    k = kp.root_key()
    w = check_status(kp.action(k["id"], "wrap", {"Plaintext": b64(b"abc"), "AAD": ["x"]}), 200).json()
    u = check_status(kp.action(k["id"], "unwrap", {"Ciphertext": w["ciphertext"], "Aad": ["x"]}), 200).json()
    assert u["plaintext"] == b64(b"abc")
    ring = kp.create_ring()
    r = kp.patch(f"/api/v2/keys/{k['id']}", {"KeyRingID": ring})
    check_status(r, 200)
    assert r.json()["resources"][0]["keyRingID"] == ring


def test_unknown_fields_on_key_create_ignored(kp):
    r = kp.post("/api/v2/keys", key_envelope(key_resource(someFutureField=1, crn="ignored")))
    check_status(r, 201)


def test_duplicate_json_members_do_not_crash(kp):
    raw = ('{"metadata":{"collectionType":"%s","collectionTotal":1},"resources":[{"type":"%s",'
           '"name":"%s","name":"%s","extractable":false}]}' % (KEY_TYPE, KEY_TYPE, uniq("d1"), uniq("d2"))).encode()
    r = kp.post("/api/v2/keys", raw=raw)
    assert r.status_code in (201, 400), describe(r)


# --- response content types (§4.1) -----------------------------------------------------------

def _ct(r):
    return r.headers.get("content-type", "").split(";")[0].strip().lower()


def test_json_content_type_for_read_endpoints(kp):
    k = kp.root_key()
    kid = k["id"]
    for path, params in [("/api/v2/keys", None), (f"/api/v2/keys/{kid}", None), (f"/api/v2/keys/{kid}/metadata", None),
                         (f"/api/v2/keys/{kid}/versions", None), (f"/api/v2/keys/{kid}/policies", None),
                         ("/api/v2/instance/policies", None), ("/api/v2/instance/allowed_ip_port", None),
                         ("/api/v2/key_rings", None), (f"/api/v2/keys/{kid}/registrations", None),
                         ("/api/v2/keys/registrations", None)]:
        r = check_status(kp.get(path, params=params), 200)
        assert JSON_CT.match(r.headers.get("content-type", "")), f"{path}{describe(r)}"


def test_json_content_type_for_other_writes(kp):
    k = kp.root_key()
    r = kp.put(f"/api/v2/keys/{k['id']}/policies",
               {"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
                "resources": [{"type": POLICY_TYPE, "rotation": {"interval_month": 4}}]})
    assert JSON_CT.match(check_status(r, 200).headers["content-type"]), describe(r)
    ring = kp.create_ring()
    r = kp.patch(f"/api/v2/keys/{k['id']}", {"keyRingID": ring})
    assert JSON_CT.match(check_status(r, 200).headers["content-type"]), describe(r)
    r = kp.delete(f"/api/v2/keys/{k['id']}", headers={"Prefer": "return=representation"})
    assert JSON_CT.match(check_status(r, 200).headers["content-type"]), describe(r)
    r = kp.post(f"/api/v2/keys/{kp.root_key()['id']}/aliases/{uniq('ct')}")
    assert JSON_CT.match(check_status(r, 200, 201).headers["content-type"]), describe(r)


def test_vnd_content_type_for_create_wrap_unwrap_restore(kp):
    """§4.1 recommended defaults: IBM's own PY3 examples call .json() on these results."""
    r = kp.create_key_resp()
    assert _ct(check_status(r, 201)) == "application/vnd.ibm.kms.key+json", describe(r)
    kid = r.json()["resources"][0]["id"]
    r = kp.create_key_resp(path="/api/v2/keys_with_policy_overrides")
    assert _ct(check_status(r, 201)) == "application/vnd.ibm.kms.key+json", describe(r)
    r = kp.wrap_resp(kid, b"x")
    assert _ct(check_status(r, 200)) == "application/vnd.ibm.kms.key_action+json", describe(r)
    r = kp.unwrap_resp(kid, r.json()["ciphertext"])
    assert _ct(check_status(r, 200)) == "application/vnd.ibm.kms.key_action+json", describe(r)
    r = kp.action(kid, "rewrap", {"ciphertext": kp.wrap(kid, b"y")["ciphertext"]})
    assert _ct(check_status(r, 200)) == "application/vnd.ibm.kms.key_action+json", describe(r)
    kp.delete_key(kid)
    r = kp.post(f"/api/v2/keys/{kid}/restore")
    assert _ct(check_status(r, 201)) == "application/vnd.ibm.kms.key+json", describe(r)


def test_error_responses_are_json(kp):
    r = kp.get("/api/v2/keys/00000000-0000-4000-8000-000000000000")
    assert _ct(r) in ("application/json", "application/vnd.ibm.kms.error+json"), describe(r)


def test_empty_list_has_resources_array(server_factory):
    c = server_factory().client()
    body = check_status(c.get("/api/v2/keys"), 200).json()
    assert body["resources"] == [] and body["metadata"]["collectionTotal"] == 0


def test_correlation_id(kp):
    r = kp.get("/api/v2/keys", headers={"Correlation-Id": "corr-123"})
    check_status(r, 200)
    assert r.headers.get("correlation-id") == "corr-123", dict(r.headers)
    r = kp.get("/api/v2/keys")
    assert r.headers.get("correlation-id"), dict(r.headers)


def test_sdk_headers_ignored(kp):
    r = kp.get("/api/v2/keys", headers={"X-Correlation-ID": "x", "X-Request-Id": "y",
                                        "User-Agent": "keyprotect-python-sdk/3.0.1", "Accept": "*/*"})
    check_status(r, 200)
    r = kp.get("/api/v2/keys", headers={"Accept": "application/vnd.ibm.collection+json"})
    check_status(r, 200)


def test_trailing_slash_and_unknown_routes(kp):
    r = kp.get("/api/v2/nosuchthing")
    assert r.status_code == 404, describe(r)
    r = kp.get("/api/v3/keys")
    assert r.status_code == 404, describe(r)


def test_method_not_allowed(kp):
    r = kp.req("PUT", "/api/v2/keys", {})
    assert r.status_code in (404, 405), describe(r)
    r = kp.req("DELETE", "/api/v2/keys")
    assert r.status_code in (404, 405), describe(r)


def test_options_and_odd_methods(kp):
    for method in ("OPTIONS", "TRACE", "CONNECT", "PROPFIND"):
        r = kp.req(method, "/api/v2/keys")
        assert r.status_code < 500, describe(r)


def test_plain_json_flag(server_factory):
    """--plain-json: every JSON body is application/json (for PY3 callers that want dicts)."""
    c = server_factory(extra=["--plain-json"]).client()
    r = check_status(c.create_key_resp(), 201)
    assert JSON_CT.match(r.headers["content-type"]), describe(r)
    kid = r.json()["resources"][0]["id"]
    r = check_status(c.wrap_resp(kid, b"x"), 200)
    assert JSON_CT.match(r.headers["content-type"]), describe(r)
    r = check_status(c.unwrap_resp(kid, r.json()["ciphertext"]), 200)
    assert JSON_CT.match(r.headers["content-type"]), describe(r)
    c.delete_key(kid)
    r = check_status(c.post(f"/api/v2/keys/{kid}/restore"), 201)
    assert JSON_CT.match(r.headers["content-type"]), describe(r)


@pytest.mark.parametrize("sent", ["2099-01-01T00:00:00.123456789Z", "2099-01-01T02:00:00+02:00",
                                  "2098-12-31T19:00:00-05:00", "2099-01-01T00:00:00.5+00:00"])
def test_expiration_date_go_time_formats(kp, sent):
    """Go marshals time.Time as RFC3339Nano with the value's zone offset (keys.go `Expiration
    *time.Time json:"expirationDate"`): accept fractions and offsets; answer in UTC `...Z`."""
    r = kp.create_key_resp(expirationDate=sent)
    check_status(r, 201)
    got = r.json()["resources"][0]["expirationDate"]
    assert got in ("2099-01-01T00:00:00Z",), got


def test_go_client_create_body(kp):
    """The exact body keyprotect-go-client CreateKeyWithAliases marshals (keys.go Key struct)."""
    body = {"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"name": uniq("go"), "type": "application/vnd.ibm.kms.key+json", "Tags": ["a"],
                           "aliases": [uniq("goal")], "extractable": False, "description": "from go"}]}
    r = kp.post("/api/v2/keys", raw=json.dumps(body, separators=(",", ":")).encode(), headers={"Content-Type": None})
    check_status(r, 201)
    k = r.json()["resources"][0]
    assert k["tags"] == ["a"] and k["aliases"] == body["resources"][0]["aliases"]


def test_delete_with_json_body_tolerated(kp):
    """Some keyprotect-go-client versions send DELETE /key_rings/{id} with a JSON body
    `{"Force":false}` (key_rings.go@123cd0c); a body on DELETE must not break the call."""
    ring = kp.create_ring()
    r = kp.delete(f"/api/v2/key_rings/{ring}", raw=b'{"Force":false}', headers={"Content-Type": "application/json"})
    check_status(r, 204)
    k = kp.root_key()
    r = kp.delete(f"/api/v2/keys/{k['id']}", raw=b"null")
    check_status(r, 200, 204)


def test_204_answers_have_no_body(kp, kp2):
    k = kp.root_key()
    rs = [kp.action(k["id"], "rotate"), kp.action(k["id"], "disable"), kp.action(k["id"], "enable"),
          kp.action(k["id"], "sync"), kp.delete(f"/api/v2/key_rings/{kp.create_ring()}"),
          kp.put("/api/v2/instance/policies",
                 {"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
                  "resources": [{"policy_type": "metrics", "policy_data": {"enabled": False}}]},
                 params={"policy": "metrics"})]
    al = uniq("nb")
    check_status(kp.post(f"/api/v2/keys/{k['id']}/aliases/{al}"), 200, 201)
    rs.append(kp.delete(f"/api/v2/keys/{k['id']}/aliases/{al}"))
    rs.append(kp.delete(f"/api/v2/keys/{k['id']}", headers={"Prefer": "return=minimal"}))
    for r in rs:
        check_status(r, 204)
        assert r.content == b"", describe(r)
        assert "content-type" not in {h.lower() for h in r.headers} or r.headers.get("content-length") == "0", describe(r)


def test_node_and_py3_exact_no_body_headers(kp):
    """Appendix A: NODE restore sends `Content-Type: …key_action_restore+json`, `Accept:
    application/vnd.ibm.kms.key+json` and no body; NODE rotate `…key_action_rotate+json` + empty body;
    PY3 rotate sends `Accept: */*`; PY3 `?action=disable` sends `…key_action+json` and `{}`."""
    k = kp.root_key()
    check_status(kp.post(f"/api/v2/keys/{k['id']}/actions/rotate", raw=b"",
                         headers={"Content-Type": "application/vnd.ibm.kms.key_action_rotate+json", "Accept": "*/*"}), 204)
    check_status(kp.post(f"/api/v2/keys/{k['id']}", raw=b"{}", params={"action": "disable"},
                         headers={"Content-Type": "application/vnd.ibm.kms.key_action+json"}), 204)
    check_status(kp.post(f"/api/v2/keys/{k['id']}/actions/enable", raw=b"",
                         headers={"Content-Type": "application/json", "Accept": "application/json, text/plain, */*"}), 204)
    kp.delete_key(k["id"])
    r = kp.post(f"/api/v2/keys/{k['id']}/restore", raw=b"",
                headers={"Content-Type": "application/vnd.ibm.kms.key_action_restore+json",
                         "Accept": "application/vnd.ibm.kms.key+json"})
    check_status(r, 201)
    assert r.json()["resources"][0]["state"] == 1
