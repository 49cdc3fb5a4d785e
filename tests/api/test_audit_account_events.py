"""Account-level changes are audited (docs/audit.md): creating and deleting users and service
IDs, creating/rotating/deleting API keys, creating/deleting access policies, creating/
updating/deleting service instances, creating/deleting authorizations and creating resource
keys — and a refused call of each group — each leave an event (read back as the dev
Administrator from GET /audit/v1/events) with the action of audit/actions.rs ROUTES, the
outcome, HTTP status, reason code (IAM's errorCode on IAM routes, the Key Protect reason
elsewhere) and principal. No API key secret returned by a create or rotate (nor a resource
key's credential) is found, raw, base64 or hex, in the events, the export, the audit store
(SQLite audit.db / the PostgreSQL table) or the --audit-log stream."""
import base64
import json
import uuid

import pytest
import requests

from api_helpers import APIKEY_GRANT, uniq, wait_for
from audit_helpers import AuditServer

SR = "crn:v1:bluemix:public:iam::::serviceRole:"
UA = "keyhold-audit-account-test/1.0"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    a = AuditServer(tmp_path_factory.mktemp("audit-account"))
    yield a
    a.stop()


class Recorder:
    """Sends account-level calls (token only) with a fresh Correlation-Id each; remembers the
    expected event: (request id, method, action, status, reason, principal)."""

    def __init__(self, a: AuditServer):
        self.a, self.expected = a, []

    def call(self, token, method, path, body=None, *, action, principal, expect, params=None):
        rid = str(uuid.uuid4())
        h = {"Correlation-Id": rid, "User-Agent": UA}
        if token:
            h["Authorization"] = "Bearer " + token
        r = requests.request(method, self.a.srv.url + path, json=body, params=params, headers=h, timeout=30)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        reason = ""
        if r.status_code >= 400:
            b = r.json()
            reason = b.get("errorCode") or b["resources"][0]["reasons"][0]["code"]
        self.expected.append((rid, method, action, r.status_code, reason, principal))
        return r.json() if r.content else None


def policy(iam_id, roles, **res):
    attrs = [{"name": "accountId", "value": "dev-account"}] + [{"name": k, "value": v} for k, v in res.items()]
    return {"type": "access", "subjects": [{"attributes": [{"name": "iam_id", "value": iam_id}]}],
            "roles": [{"role_id": r} for r in roles], "resources": [{"attributes": attrs}]}


def encodings(secret: bytes) -> dict[str, bytes]:
    return {"raw": secret, "base64": base64.b64encode(secret),
            "base64url": base64.urlsafe_b64encode(secret).rstrip(b"="),
            "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode()}


def test_account_changes_are_audited_and_no_api_key_leaks(world):
    a = world
    admin, svc = a.srv.token(), a.srv.token(a.srv.service_apikey)
    rec = Recorder(a)
    ADM, SVC = "dev-admin", "dev-service"
    secrets = {}

    # users ---------------------------------------------------------------------------------
    user = rec.call(admin, "POST", "/v1/users", {"user_id": uniq("aud") + "@example.com"},
                    action="iam.user.create", principal=ADM, expect=201)["iam_id"]
    rec.call(svc, "POST", "/v1/users", {"user_id": uniq("no") + "@example.com"},
             action="iam.user.create", principal=SVC, expect=403)
    rec.call(admin, "DELETE", f"/v1/users/{user}", action="iam.user.delete", principal=ADM, expect=204)
    rec.call(admin, "DELETE", f"/v1/users/{user}", action="iam.user.delete", principal=ADM, expect=404)

    # service IDs -----------------------------------------------------------------------------
    sid = rec.call(admin, "POST", "/v1/serviceids", {"name": uniq("aud-svc")},
                   action="iam.serviceid.create", principal=ADM, expect=201)["iam_id"]
    rec.call(svc, "POST", "/v1/serviceids", {"name": uniq("no")}, action="iam.serviceid.create",
             principal=SVC, expect=403)
    doomed = rec.call(admin, "POST", "/v1/serviceids", {"name": uniq("aud-doomed")},
                      action="iam.serviceid.create", principal=ADM, expect=201)["iam_id"]
    rec.call(svc, "DELETE", f"/v1/serviceids/{doomed}", action="iam.serviceid.delete", principal=SVC, expect=403)
    rec.call(admin, "DELETE", f"/v1/serviceids/{doomed}", action="iam.serviceid.delete", principal=ADM, expect=204)

    # API keys --------------------------------------------------------------------------------
    k = rec.call(admin, "POST", "/v1/apikeys", {"name": "aud-key", "iam_id": sid},
                 action="iam.apikey.create", principal=ADM, expect=201)
    secrets["created apikey"] = k["apikey"]
    rot = rec.call(admin, "POST", f"/v1/apikeys/{k['id']}/rotate", action="iam.apikey.rotate",
                   principal=ADM, expect=200)
    secrets["rotated apikey"] = rot["apikey"]
    # The service ID's own token: it may rotate its own key, not create one for another principal.
    r = requests.post(a.srv.url + "/identity/token", data={"grant_type": APIKEY_GRANT, "apikey": rot["apikey"]},
                      timeout=30)
    assert r.status_code == 200, r.text
    own = r.json()["access_token"]
    rot2 = rec.call(own, "POST", f"/v1/apikeys/{k['id']}/rotate", action="iam.apikey.rotate", principal=sid,
                    expect=200)
    secrets["self-rotated apikey"] = rot2["apikey"]
    rec.call(svc, "POST", "/v1/apikeys", {"name": "x", "iam_id": sid}, action="iam.apikey.create",
             principal=SVC, expect=403)
    rec.call(svc, "POST", f"/v1/apikeys/{k['id']}/rotate", action="iam.apikey.rotate", principal=SVC, expect=403)
    rec.call(svc, "DELETE", f"/v1/apikeys/{k['id']}", action="iam.apikey.delete", principal=SVC, expect=403)
    rec.call(admin, "DELETE", f"/v1/apikeys/{k['id']}", action="iam.apikey.delete", principal=ADM, expect=204)

    # policies --------------------------------------------------------------------------------
    p = rec.call(admin, "POST", "/v1/policies", policy(sid, [SR + "Reader"], serviceName="kms"),
                 action="iam.policy.create", principal=ADM, expect=201)
    rec.call(admin, "POST", "/v1/policies", policy(sid, [SR + "Owner"], serviceName="kms"),
             action="iam.policy.create", principal=ADM, expect=400)
    rec.call(svc, "POST", "/v1/policies", policy(sid, [SR + "Manager"], serviceName="kms"),
             action="iam.policy.create", principal=SVC, expect=403)
    rec.call(svc, "DELETE", f"/v1/policies/{p['id']}", action="iam.policy.delete", principal=SVC, expect=403)
    rec.call(admin, "DELETE", f"/v1/policies/{p['id']}", action="iam.policy.delete", principal=ADM, expect=204)

    # instances, resource keys ------------------------------------------------------------------
    hs = rec.call(admin, "POST", "/v2/resource_instances",
                  {"name": uniq("aud-hs"), "resource_plan_id": "hs-crypto-standard", "parameters": {"units": 1}},
                  action="resource.instance.create", principal=ADM, expect=201)
    rec.call(svc, "POST", "/v2/resource_instances", {"name": uniq("no"), "resource_plan_id": "hs-crypto-standard"},
             action="resource.instance.create", principal=SVC, expect=401)
    rec.call(admin, "POST", "/v2/resource_instances", {"name": uniq("bad"), "resource_plan_id": "hs-crypto-standard",
                                                     "parameters": {"units": 99}},
             action="resource.instance.create", principal=ADM, expect=400)
    rec.call(admin, "PATCH", f"/v2/resource_instances/{hs['guid']}", {"parameters": {"units": 3}},
             action="resource.instance.update", principal=ADM, expect=200)
    rec.call(svc, "PATCH", f"/v2/resource_instances/{hs['guid']}", {"name": "x"},
             action="resource.instance.update", principal=SVC, expect=401)
    cos = rec.call(admin, "POST", "/v2/resource_instances", {"name": uniq("aud-cos"), "service": "cloud-object-storage"},
                   action="resource.instance.create", principal=ADM, expect=201)
    cred = rec.call(admin, "POST", "/v2/resource_keys", {"source": cos["guid"], "name": "aud-cred"},
                    action="resource.key.create", principal=ADM, expect=201)
    secrets["resource key apikey"] = cred["credentials"]["apikey"]
    rec.call(svc, "POST", "/v2/resource_keys", {"source": cos["guid"], "name": "no"},
             action="resource.key.create", principal=SVC, expect=401)

    # authorizations ----------------------------------------------------------------------------
    auth = rec.call(admin, "POST", "/v1/authorizations", {
        "source": {"service_name": "cloud-object-storage", "instance_id": cos["guid"]},
        "target": {"service_name": "hs-crypto", "instance_id": hs["guid"]}, "roles": ["Reader"]},
        action="iam.authorization.create", principal=ADM, expect=201)
    rec.call(svc, "POST", "/v1/authorizations", {
        "source": {"service_name": "cloud-object-storage"}, "target": {"service_name": "kms"}, "roles": ["Reader"]},
        action="iam.authorization.create", principal=SVC, expect=401)
    rec.call(svc, "DELETE", f"/v1/authorizations/{auth['id']}", action="iam.authorization.delete",
             principal=SVC, expect=401)
    rec.call(admin, "DELETE", f"/v1/authorizations/{auth['id']}", action="iam.authorization.delete",
             principal=ADM, expect=204)

    # instance deletes (after the authorization that named them) --------------------------------
    rec.call(svc, "DELETE", f"/v2/resource_instances/{hs['guid']}", action="resource.instance.delete",
             principal=SVC, expect=401)
    rec.call(admin, "DELETE", f"/v2/resource_instances/{hs['guid']}", action="resource.instance.delete",
             principal=ADM, expect=204)
    rec.call(admin, "DELETE", f"/v2/resource_instances/{cos['guid']}", action="resource.instance.delete",
             principal=ADM, expect=204)

    # refused before authentication: no token, a tampered token (principal unknown) ------------
    h, c, sig = admin.split(".")
    tampered = ".".join([h, c[:-4] + ("AAAA" if not c.endswith("AAAA") else "BBBB"), sig])
    for token in ("", tampered):
        rec.call(token, "POST", "/v1/users", {"user_id": uniq("anon") + "@example.com"},
                 action="iam.user.create", principal="", expect=401)
        rec.call(token, "POST", "/v2/resource_instances", {"name": uniq("anon"), "service": "cloud-object-storage"},
                 action="resource.instance.create", principal="", expect=401)
        rec.call(token, "POST", "/v1/authorizations", {}, action="iam.authorization.create", principal="",
                 expect=401)

    # the events ----------------------------------------------------------------------------------
    def all_there():
        ids = {e["request_id"] for e in a.events()}
        return all(x[0] in ids for x in rec.expected)
    assert wait_for(all_there, timeout=10), "some account-level calls have no audit event"
    events = {e["request_id"]: e for e in a.events()}
    problems = []
    for rid, method, action, status, reason, principal in rec.expected:
        e = events[rid]
        want = {"action": action, "method": method, "status": status, "reason": reason,
                "outcome": "success" if status < 400 else "failure", "principal_id": principal,
                "account_id": "dev-account" if principal else "", "user_agent": UA}
        got = {k: e.get(k) for k in want}
        if got != want:
            problems.append(f"{method} {e.get('route')}: want {want}, got {got}")
    assert not problems, "\n".join(problems)
    refused = [x for x in rec.expected if x[3] >= 400]
    assert {x[2] for x in refused} >= {
        "iam.user.create", "iam.serviceid.create", "iam.apikey.create", "iam.policy.create",
        "resource.instance.create", "resource.key.create", "iam.authorization.create"}

    # no API key secret, in any encoding, anywhere the trail is kept -------------------------------
    places = {"events API": json.dumps(list(events.values())).encode(),
              "export": a.export_text().encode(),
              "audit store": a.raw_store_bytes()}
    assert wait_for(lambda: a.log.exists() and all(x[0].encode() in a.log.read_bytes() for x in rec.expected),
                    timeout=10)
    places["--audit-log"] = a.log.read_bytes()
    for place, blob in places.items():
        assert blob, place
        for name, secret in secrets.items():
            assert secret.startswith("kh_") or len(secret) >= 16, name
            for value in (secret.encode(), secret.removeprefix("kh_").encode()):
                for form, enc in encodings(value).items():
                    assert enc not in blob, f"{name} ({form}) found in {place}"
