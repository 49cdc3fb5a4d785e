"""Wire-level tolerance other real clients rely on (§3 body rules, §4 conventions), via plain HTTP.

These requests are the exact shapes the Go client / NODE / PY2 send (Appendix A, §3)."""

import base64
import json
import uuid

import pytest

from kh3 import uniq


def _create(server, **extra):
    doc = {"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
           "resources": [dict({"type": "application/vnd.ibm.kms.key+json", "name": uniq("wire"), "extractable": False}, **extra)]}
    r = server.raw("POST", "/api/v2/keys", data=json.dumps(doc))  # no Content-Type at all (Go client)
    assert r.status_code == 201, r.text
    return r.json()["resources"][0]


def test_create_without_content_type(server):
    k = _create(server)
    assert k["state"] == 1


def test_create_with_go_style_Tags_member(server):
    # GO marshals tags as "Tags"; member names are matched case-insensitively (§3, inferred).
    k = _create(server, Tags=["go-tag"])
    assert k.get("tags") == ["go-tag"], k


@pytest.mark.parametrize("body,ctype", [(b"", None), (b"{}", None), (b"null", None), (b"", "application/json"),
                                        (b"null", "application/json")])
def test_no_body_actions_accept_empty_object_and_null(server, body, ctype):
    k = _create(server)
    h = {"Content-Type": ctype} if ctype else {}
    for action in ("disable", "enable", "rotate"):
        r = server.raw("POST", f"/api/v2/keys/{k['id']}/actions/{action}", data=body, headers=h)
        assert r.status_code == 204, (action, body, ctype, r.status_code, r.text)
        assert r.content == b""


def test_dual_auth_actions_accept_null_body(server):
    k = _create(server)
    pol = {"metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
           "resources": [{"type": "application/vnd.ibm.kms.policy+json", "dualAuthDelete": {"enabled": True}}]}
    r = server.raw("PUT", f"/api/v2/keys/{k['id']}/policies?policy=dualAuthDelete", json=pol)
    assert r.status_code == 200, r.text
    for action in ("setKeyForDeletion", "unsetKeyForDeletion"):
        r = server.raw("POST", f"/api/v2/keys/{k['id']}/actions/{action}", data=b"null")
        assert r.status_code == 204, (action, r.text)


def test_delete_go_style_prefer_and_patch_KeyRingID(server):
    ring = uniq("gr")
    assert server.raw("POST", f"/api/v2/key_rings/{ring}").status_code == 201
    k = _create(server)
    r = server.raw("PATCH", f"/api/v2/keys/{k['id']}", data=json.dumps({"KeyRingID": ring}),
                   headers={"X-Kms-Key-Ring": "default"})
    assert r.status_code == 200, r.text
    assert r.json()["resources"][0]["keyRingID"] == ring
    r = server.raw("DELETE", f"/api/v2/keys/{k['id']}", headers={"Prefer": "return=minimal"})
    assert r.status_code == 204 and r.content == b"", r.text


def test_two_hundred_responses_always_have_a_body(server):
    """GO treats 200 as 'must unmarshal body' (§4.2)."""
    k = _create(server)
    for method, path, body in [
        ("GET", "/api/v2/keys", None),
        ("GET", f"/api/v2/keys/{k['id']}", None),
        ("GET", f"/api/v2/keys/{k['id']}/metadata", None),
        ("GET", f"/api/v2/keys/{k['id']}/versions", None),
        ("GET", f"/api/v2/keys/{k['id']}/policies", None),
        ("GET", "/api/v2/instance/policies", None),
        ("GET", "/api/v2/key_rings", None),
        ("GET", "/api/v2/keys/registrations", None),
        ("POST", f"/api/v2/keys/{k['id']}/actions/wrap", b"{}"),
    ]:
        r = server.raw(method, path, data=body)
        assert r.status_code == 200, (method, path, r.status_code, r.text)
        doc = r.json()
        assert isinstance(doc, dict) and doc, (method, path)
        if "resources" in doc:
            assert isinstance(doc["resources"], list)
            assert isinstance(doc["metadata"]["collectionTotal"], int)


def test_error_shape(server):
    r = server.raw("GET", f"/api/v2/keys/{uuid.uuid4()}")
    assert r.status_code == 404
    doc = r.json()
    assert set(doc) == {"metadata", "resources"}, doc
    assert doc["metadata"] == {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1}
    res = doc["resources"][0]
    assert res["errorMsg"].startswith("Not Found:") and res["errorMsg"].endswith("(KEY_NOT_FOUND_ERR)"), res
    reason = res["reasons"][0]
    assert reason["code"] == "KEY_NOT_FOUND_ERR"
    assert reason["status"] == 404
    assert reason["message"]
    assert reason["moreInfo"].startswith("https://")


def test_correlation_id_echoed(server):
    cid = str(uuid.uuid4())
    r = server.raw("GET", "/api/v2/keys", headers={"Correlation-Id": cid})
    assert r.headers.get("Correlation-Id") == cid, dict(r.headers)


def test_old_action_wrap_query_form_raw(server):
    k = _create(server)
    pt = base64.b64encode(b"raw old form").decode()
    r = server.raw("POST", f"/api/v2/keys/{k['id']}?action=wrap", json={"plaintext": pt})
    assert r.status_code == 200, r.text
    ct = r.json()["ciphertext"]
    r = server.raw("POST", f"/api/v2/keys/{k['id']}/actions/unwrap", json={"ciphertext": ct})
    assert r.status_code == 200 and r.json()["plaintext"] == pt, r.text


def test_content_types_default_and_plain_json():
    """§4.1: vendor types for create/restore/wrap/unwrap/rewrap by default (the py3 SDK then hands back a
    requests.Response), application/json elsewhere; --plain-json makes every body application/json."""
    import requests as rq
    from kh3 import FAST_FLAGS, Server, body, key_body
    for flags, vendor in ((FAST_FLAGS, True), (FAST_FLAGS + ["--plain-json"], False)):
        s = Server(flags).start()
        try:
            kp, inst = s.client(), s.instance
            res = kp.create_key(bluemix_instance=inst, key_create_body=key_body(uniq()))
            r = res.get_result()
            if vendor:
                assert isinstance(r, rq.Response), type(r)
                assert r.headers["Content-Type"].startswith("application/vnd.ibm.kms.key+json"), r.headers
                kid = r.json()["resources"][0]["id"]
                w = kp.wrap_key(id=kid, bluemix_instance=inst, key_action_wrap_body=body({})).get_result()
                assert isinstance(w, rq.Response)
                assert w.headers["Content-Type"].startswith("application/vnd.ibm.kms.key_action+json"), w.headers
            else:
                assert isinstance(r, dict), type(r)
                kid = r["resources"][0]["id"]
                w = kp.wrap_key(id=kid, bluemix_instance=inst, key_action_wrap_body=body({})).get_result()
                assert isinstance(w, dict)
            assert isinstance(kp.get_key(id=kid, bluemix_instance=inst).get_result(), dict)
            assert isinstance(kp.get_keys(bluemix_instance=inst).get_result(), dict)
        finally:
            s.stop()
