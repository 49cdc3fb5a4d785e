"""Every call leaves an audit event (docs/audit.md; issue #8 must-show): for allowed and refused
calls on every endpoint group the event names the right action, outcome, status, reason code,
principal, instance and key; and no secret (DEK, ciphertext, key material, API key, token) is
found in any event, in any form (raw, base64, hex), via the API, in the audit store or in the
--audit-log stream. Runs on the suite's store (SQLite or PostgreSQL)."""
import base64
import json
import os
import uuid

import pytest
import requests

from api_helpers import APIKEY_GRANT, b64, crn_path, key_envelope, key_resource, policy_envelope, uniq, wait_for
from audit_helpers import AuditServer

UA = "keyhold-audit-test/1.0"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    a = AuditServer(tmp_path_factory.mktemp("audit-events"))
    yield a
    a.stop()


class Recorder:
    """Sends calls with a fresh Correlation-Id each and remembers what was expected."""

    def __init__(self, a: AuditServer):
        self.a = a
        self.expected = []  # (rid, action, status, reason, principal, key_id)

    def call(self, client, method, path, body=None, *, action, principal="dev-admin", key_id="",
             raw=None, auth=True, headers=None, params=None):
        rid = str(uuid.uuid4())
        h = {"Correlation-Id": rid, "User-Agent": UA, **(headers or {})}
        kw = {"headers": h, "params": params, "auth": auth}
        if body is not None:
            kw["body"] = body
        if raw is not None:
            kw["raw"] = raw
        r = client.req(method, path, **kw)
        assert r.headers.get("correlation-id") == rid
        reason = ""
        if r.status_code >= 400:
            reason = r.json()["resources"][0]["reasons"][0]["code"]
        self.expected.append((rid, action, r.status_code, reason, principal, key_id, method))
        return r

    def plain(self, method, path, *, action, data=None, principal="", expect_reason=None):
        """A call outside the Key Protect client (IAM token, unknown routes)."""
        rid = str(uuid.uuid4())
        r = requests.request(method, self.a.srv.url + path, data=data, timeout=30,
                             headers={"Correlation-Id": rid, "User-Agent": UA})
        reason = ""
        if r.status_code >= 400:
            body = r.json()
            reason = body.get("errorCode") or body["resources"][0]["reasons"][0]["code"]
        if expect_reason:
            assert reason == expect_reason
        self.expected.append((rid, action, r.status_code, reason, principal, "", method))
        return r


def test_every_endpoint_group_is_audited_and_no_secret_leaks(world):
    a = world
    kp = a.kp
    svc = a.srv.client(a.srv.service_apikey)
    rec = Recorder(a)
    secrets: dict[str, bytes] = {}

    # keys --------------------------------------------------------------------------------
    r = rec.call(kp, "POST", "/api/v2/keys", key_envelope(key_resource(uniq("root"))), action="kms.secrets.create")
    assert r.status_code == 201
    kid = r.json()["resources"][0]["id"]
    material = os.urandom(32)
    secrets["standard key material"] = material
    r = rec.call(kp, "POST", "/api/v2/keys",
                 key_envelope(key_resource(uniq("std"), extractable=True, payload=b64(material))),
                 action="kms.secrets.create")
    assert r.status_code == 201
    rec.call(kp, "POST", "/api/v2/keys", raw=b"{not json", action="kms.secrets.create",
             headers={"Content-Type": "application/json"})
    rec.call(kp, "GET", f"/api/v2/keys/{kid}", action="kms.secrets.read", key_id=kid)
    missing = "00000000-0000-4000-8000-000000000000"
    rec.call(kp, "GET", f"/api/v2/keys/{missing}", action="kms.secrets.read", key_id=missing)
    rec.call(kp, "GET", "/api/v2/keys", action="kms.secrets.list")
    rec.call(svc, "POST", "/api/v2/keys", key_envelope(key_resource(uniq("x"))), action="kms.secrets.create",
             principal="dev-service")
    rec.call(kp, "GET", "/api/v2/keys", action="kms.secrets.list", principal="", auth=False)
    rec.call(kp, "GET", "/api/v2/keys", action="kms.secrets.list", principal="",
             headers={"Authorization": "Bearer not-a-token"})

    # actions -----------------------------------------------------------------------------
    dek = os.urandom(32)
    secrets["DEK"] = dek
    r = rec.call(kp, "POST", f"/api/v2/keys/{kid}/actions/wrap", {"plaintext": b64(dek), "aad": ["x"]},
                 action="kms.secrets.wrap", key_id=kid)
    assert r.status_code == 200
    ct = r.json()["ciphertext"]
    version = r.json()["keyVersion"]["id"]
    secrets["ciphertext"] = base64.b64decode(ct)
    r = rec.call(kp, "POST", f"/api/v2/keys/{kid}/actions/unwrap", {"ciphertext": ct, "aad": ["x"]},
                 action="kms.secrets.unwrap", key_id=kid)
    assert base64.b64decode(r.json()["plaintext"]) == dek
    rec.call(kp, "POST", f"/api/v2/keys/{kid}/actions/unwrap", {"ciphertext": b64(os.urandom(80))},
             action="kms.secrets.unwrap", key_id=kid)
    r = rec.call(kp, "POST", f"/api/v2/keys/{kid}", {}, params={"action": "wrap"}, action="kms.secrets.wrap",
                 key_id=kid)
    secrets["generated DEK"] = base64.b64decode(r.json()["plaintext"])
    secrets["generated DEK ciphertext"] = base64.b64decode(r.json()["ciphertext"])
    rec.call(kp, "POST", f"/api/v2/keys/{kid}/actions/rotate", action="kms.secrets.rotate", key_id=kid)
    rec.call(svc, "POST", f"/api/v2/keys/{kid}/actions/rotate", action="kms.secrets.rotate", key_id=kid,
             principal="dev-service")
    rec.call(kp, "POST", f"/api/v2/keys/{kid}/actions/explode", action="kms.secrets.action", key_id=kid)

    # policies ----------------------------------------------------------------------------
    rec.call(kp, "PUT", f"/api/v2/keys/{kid}/policies",
             policy_envelope({"type": "application/vnd.ibm.kms.policy+json", "rotation": {"interval_month": 3}}),
             action="kms.policies.write", key_id=kid)
    rec.call(kp, "GET", f"/api/v2/keys/{kid}/policies", action="kms.policies.read", key_id=kid)
    rec.call(kp, "PUT", f"/api/v2/keys/{kid}/policies", raw=b"[]", action="kms.policies.write", key_id=kid,
             headers={"Content-Type": "application/json"})
    rec.call(kp, "GET", "/api/v2/instance/policies", action="kms.instancepolicies.read")

    # rings and aliases --------------------------------------------------------------------
    ring = uniq("ring")
    rec.call(kp, "POST", f"/api/v2/key_rings/{ring}", action="kms.keyrings.create")
    rec.call(kp, "DELETE", f"/api/v2/key_rings/{uniq('none')}", action="kms.keyrings.delete")
    rec.call(kp, "GET", "/api/v2/key_rings", action="kms.keyrings.list")
    alias = uniq("alias")
    rec.call(kp, "POST", f"/api/v2/keys/{kid}/aliases/{alias}", action="kms.secrets.createalias", key_id=kid)
    rec.call(kp, "GET", f"/api/v2/keys/{alias}", action="kms.secrets.read", key_id=alias)
    rec.call(kp, "DELETE", f"/api/v2/keys/{kid}/aliases/{alias}", action="kms.secrets.deletealias", key_id=kid)
    rec.call(kp, "DELETE", f"/api/v2/keys/{kid}/aliases/{alias}", action="kms.secrets.deletealias", key_id=kid)

    # registrations -----------------------------------------------------------------------
    crn = f"crn:v1:bluemix:public:cloud-object-storage:global:a/acct:{uuid.uuid4()}:bucket:b1"
    reg = {"metadata": {"collectionType": "application/vnd.ibm.kms.registration_input+json",
                        "collectionTotal": 1},
           "resources": [{"preventKeyDeletion": False, "description": "d"}]}
    rec.call(svc, "POST", f"/api/v2/keys/{kid}/registrations/{crn_path(crn)}", reg,
             action="kms.registrations.create", key_id=kid, principal="dev-service")
    rec.call(kp, "POST", f"/api/v2/keys/{kid}/registrations/{crn_path(crn)}", reg,
             action="kms.registrations.create", key_id=kid)
    rec.call(kp, "GET", f"/api/v2/keys/{kid}/registrations", action="kms.registrations.list", key_id=kid)
    rec.call(kp, "GET", "/api/v2/keys/registrations", action="kms.registrations.list")

    # import token ------------------------------------------------------------------------
    rec.call(kp, "POST", "/api/v2/import_token", {"expiration": 600, "maxAllowedRetrievals": 2},
             action="kms.importtoken.create")
    rec.call(kp, "GET", "/api/v2/import_token", action="kms.importtoken.read")
    rec.call(kp, "POST", "/api/v2/import_token", {"expiration": 1}, action="kms.importtoken.create")

    # IAM token ---------------------------------------------------------------------------
    r = rec.plain("POST", "/identity/token", action="iam.token.create", principal="dev-admin",
                  data={"grant_type": APIKEY_GRANT, "apikey": a.srv.apikey})
    assert r.status_code == 200
    secrets["access token"] = r.json()["access_token"].encode()
    secrets["refresh token"] = r.json()["refresh_token"].encode()
    rec.plain("POST", "/identity/token", action="iam.token.create",
              data={"grant_type": APIKEY_GRANT, "apikey": "kh_wrong"}, expect_reason="BXNIM0415E")
    for name in ("apikey", "second_apikey", "service_apikey"):
        secrets[name] = a.srv.info[name].encode()
    secrets["session token"] = a.srv.token().encode()

    # ceremony, unknown routes, the audit API itself ------------------------------------------
    rec.call(kp, "GET", "/ceremony/v1/status", action="ceremony.status.read")
    rec.call(kp, "POST", "/ceremony/v1/commands", {"command": {}, "admin": "a", "signature": "AA=="},
             action="ceremony.command")
    rec.plain("GET", "/no/such/route", action="http.unmatched")
    rec.call(svc, "GET", "/audit/v1/events", action="audit.events.read", principal="dev-service")

    # ---------------------------------------------------------------------------------------
    def all_there():
        ids = {e["request_id"] for e in a.events()}
        return all(x[0] in ids for x in rec.expected)
    assert wait_for(all_there, timeout=10), "some calls have no audit event"
    events = {e["request_id"]: e for e in a.events()}
    problems = []
    for rid, action, status, reason, principal, key_id, method in rec.expected:
        e = events[rid]
        want = {"action": action, "status": status, "reason": reason, "principal_id": principal,
                "outcome": "success" if status < 400 else "failure", "method": method,
                "source_ip": "127.0.0.1", "user_agent": UA, "type": "event"}
        if key_id:
            want["key_id"] = key_id
        got = {k: e.get(k) for k in want}
        if got != want:
            problems.append(f"{method} {e['route']}: want {want}, got {got}")
        if principal and principal != "":
            assert e["account_id"] == "dev-account", e
        if e["route"].startswith("/api/v2/") and status != 401:
            assert e["instance_id"] == a.srv.instance_id, e
    assert not problems, "\n".join(problems)
    wrap = events[rec.expected[[x[1] for x in rec.expected].index("kms.secrets.wrap")][0]]
    assert wrap["key_version"] == version
    # a create names the key it made (its id is not in the path)
    created = events[rec.expected[0][0]]
    assert created["action"] == "kms.secrets.create" and created["key_id"] == kid, created
    assert wrap["principal_kind"] == "user"
    refused = [events[x[0]] for x in rec.expected if x[4] == "dev-service"]
    assert all(e["principal_kind"] == "service" for e in refused)
    # The route is recorded as its template, never the raw path (which could hold a CRN).
    assert not [e for e in events.values() if "bucket:b1" in json.dumps(e)]
    assert {e["route"] for e in events.values()} >= {"/api/v2/keys/{id}/registrations/{crn}", "unmatched"}

    # No secret, in any encoding, anywhere the trail is kept ------------------------------------
    places = {
        "events API": json.dumps(list(events.values())).encode(),
        "export": a.export_text().encode(),
        "audit store": a.raw_store_bytes(),
    }
    assert wait_for(lambda: a.log.exists() and all(x[0].encode() in a.log.read_bytes() for x in rec.expected), timeout=10)
    places["--audit-log"] = a.log.read_bytes()
    for place, blob in places.items():
        assert blob, place
        for name, secret in secrets.items():
            for form, enc in encodings(secret).items():
                assert enc not in blob, f"{name} ({form}) found in {place}"


def encodings(secret: bytes) -> dict[str, bytes]:
    forms = {
        "raw": secret,
        "base64": base64.b64encode(secret),
        "base64url": base64.urlsafe_b64encode(secret).rstrip(b"="),
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
    }
    # A long value's base64 without its padding-dependent tail still identifies it.
    forms["base64 (prefix)"] = forms["base64"][:24] if len(secret) >= 18 else forms["base64"]
    return forms


def test_events_filters_paging_and_access(world):
    a = world
    kp = a.kp
    kid = kp.root_key()["id"]
    for _ in range(3):
        kp.wrap(kid, os.urandom(16))
    kp.get("/api/v2/keys/00000000-0000-4000-8000-000000000001")
    assert wait_for(lambda: len(a.events(key_id=kid, action="kms.secrets.wrap")) == 3, timeout=10)
    wraps = a.events(key_id=kid, action="kms.secrets.wrap")
    assert [e["seq"] for e in wraps] == sorted(e["seq"] for e in wraps)
    assert all(e["outcome"] == "success" for e in wraps)
    fails = a.events(outcome="failure")
    assert fails and all(e["outcome"] == "failure" for e in fails)
    assert all(e["principal_id"] == "dev-admin" for e in a.events(principal="dev-admin"))
    assert all(e["instance_id"] == a.srv.instance_id for e in a.events(instance=a.srv.instance_id))
    first = wraps[0]
    assert a.events(key_id=kid, action="kms.secrets.wrap", **{"from": first["time"]})[0]["seq"] == first["seq"]
    assert a.events(key_id=kid, to="2000-01-01T00:00:00Z") == []
    # paging
    h = a.headers()
    r = requests.get(a.srv.url + "/audit/v1/events", headers=h, params={"limit": 2}, timeout=30).json()
    assert len(r["resources"]) == 2 and r["next_after"] == r["resources"][1]["seq"]
    r2 = requests.get(a.srv.url + "/audit/v1/events", headers=h, params={"limit": 2, "after": r["next_after"]},
                      timeout=30).json()
    assert r2["resources"][0]["seq"] > r["next_after"]
    # bad filters are Key Protect-shaped 400s
    for params in ({"limit": 0}, {"limit": "x"}, {"outcome": "maybe"}, {"from": "yesterday"}, {"bogus": 1}):
        r = requests.get(a.srv.url + "/audit/v1/events", headers=h, params=params, timeout=30)
        assert r.status_code == 400, params
        assert r.json()["resources"][0]["reasons"][0]["code"] == "INVALID_QUERY_PARAM_ERR"
    # only an account Administrator reads the trail
    for headers in ({}, {"Authorization": "Bearer " + a.srv.token(a.srv.service_apikey)}):
        for path in ("/audit/v1/events", "/audit/v1/export"):
            r = requests.get(a.srv.url + path, headers=headers, timeout=30)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["resources"][0]["reasons"][0]["code"] == "UNAUTHORIZED_ERR"
    # the public keys need no credentials
    keys = requests.get(a.srv.url + "/audit/v1/keys", timeout=30).json()["keys"]
    assert keys[0]["alg"] == "Ed25519" and len(base64.b64decode(keys[0]["public_key"])) == 32
