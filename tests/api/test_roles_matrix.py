"""Role × endpoint matrix (keyprotect-api.md Appendix B), over real HTTP.

For every Key Protect route of the router and every caller — a service ID holding one
service role (Reader, ReaderPlus, Writer, Manager, KeyPurge, KmipAdapterManager) on the
instance, one with no role, one with Manager on another instance, one with Manager and
KeyPurge on another key ring, an expired token and a token of another deployment — the
outcome is the table's: allowed (2xx) or 401 UNAUTHORIZED_ERR in the Key Protect envelope.
Identities and policies are created once; each case prepares the key it acts on.
Then key-ring and key scoped grants: honoured on their ring / key, nothing elsewhere."""
import time
from urllib.parse import quote

import pytest
import requests

from api_helpers import (APIKEY_GRANT, REG_INPUT_TYPE, assert_kp_error, key_envelope,
                         key_resource, policy_envelope, uniq)

LIFETIME = 4  # seconds: short, so the "expired" caller holds a truly expired token of this server
SR = "crn:v1:bluemix:public:iam::::serviceRole:"
R, RP, W, M, KP, KA = "Reader", "ReaderPlus", "Writer", "Manager", "KeyPurge", "KmipAdapterManager"
ROLES = [R, RP, W, M, KP, KA]
READ = {R, RP, W, M}
LIST = READ | {KA}
WM = {W, M}
DENIED_CALLERS = ["no-role", "wrong-instance", "wrong-ring", "expired", "other-deployment"]
POLICY_TYPE = "application/vnd.ibm.kms.policy+json"


class Caller:
    """Talks Key Protect for one API key; fetches a new token before the old one expires."""

    def __init__(self, srv, apikey=None, token=None):
        self.srv, self.apikey, self._token, self._at = srv, apikey, token, time.time()
        self.s = requests.Session()

    def token(self):
        if self.apikey and (self._token is None or time.time() - self._at > LIFETIME - 2):
            r = self.s.post(self.srv.url + "/identity/token", data={"grant_type": APIKEY_GRANT, "apikey": self.apikey},
                            timeout=30)
            assert r.status_code == 200, r.text
            self._token, self._at = r.json()["access_token"], time.time()
        return self._token

    def req(self, method, path, body=None, params=None, headers=None):
        h = {"Authorization": "Bearer " + self.token(), "Bluemix-Instance": self.srv.instance_id}
        h.update(headers or {})
        return self.s.request(method, self.srv.url + path, json=body, params=params, headers=h, timeout=60)

    def ok(self, method, path, body=None, **kw):
        r = self.req(method, path, body, **kw)
        assert 200 <= r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None


def iam_post(srv, admin, path, body):
    r = requests.post(srv.url + path, json=body, headers={"Authorization": "Bearer " + admin.token()}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def grant(srv, admin, iam_id, roles, **res):
    attrs = [{"name": "accountId", "value": "dev-account"}, {"name": "serviceName", "value": "kms"}]
    attrs += [{"name": k, "value": v} for k, v in res.items()]
    iam_post(srv, admin, "/v1/policies", {
        "type": "access", "subjects": [{"attributes": [{"name": "iam_id", "value": iam_id}]}],
        "roles": [{"role_id": SR + r} for r in roles], "resources": [{"attributes": attrs}]})


def service_id_with_key(srv, admin, name):
    sid = iam_post(srv, admin, "/v1/serviceids", {"name": name})["iam_id"]
    key = iam_post(srv, admin, "/v1/apikeys", {"name": name, "iam_id": sid})["apikey"]
    return sid, key


@pytest.fixture(scope="module")
def world(server_factory):
    srv = server_factory(extra=["--token-lifetime", str(LIFETIME)])
    admin = Caller(srv, srv.apikey)
    inst = srv.instance_id
    callers = {}
    for role in ROLES:
        sid, key = service_id_with_key(srv, admin, f"matrix-{role}")
        grant(srv, admin, sid, [role], serviceInstance=inst)
        callers[role] = Caller(srv, key)
    _, key = service_id_with_key(srv, admin, "matrix-none")
    callers["no-role"] = Caller(srv, key)
    sid, key = service_id_with_key(srv, admin, "matrix-other-instance")
    grant(srv, admin, sid, [M, KP], serviceInstance="00000000-0000-4000-8000-000000000000")
    callers["wrong-instance"] = Caller(srv, key)
    for ring in ("matrix-a", "matrix-b"):
        admin.ok("POST", f"/api/v2/key_rings/{ring}")
    sid, key = service_id_with_key(srv, admin, "matrix-ring-a")
    grant(srv, admin, sid, [M, KP, W], serviceInstance=inst, resourceType="key-ring", resource="matrix-a")
    callers["wrong-ring"] = Caller(srv, key)
    ring_caller = Caller(srv, key)
    expired = Caller(srv, token=Caller(srv, srv.apikey).token())
    other = server_factory()
    callers["other-deployment"] = Caller(srv, token=Caller(other, other.apikey).token())
    time.sleep(LIFETIME + 0.5)
    callers["expired"] = expired
    shared = admin.ok("POST", "/api/v2/keys", key_envelope(key_resource(uniq("shared"))))["resources"][0]["id"]
    admin.ok("POST", "/api/v2/import_token", {"expiration": 3600, "maxAllowedRetrievals": 500})
    return {"srv": srv, "admin": admin, "callers": callers, "shared": shared, "ring_caller": ring_caller}


# ---- preparations (by the administrator) and calls (by the caller under test) ----

def new_key(w, ring=None):
    h = {"X-Kms-Key-Ring": ring} if ring else None
    return w["admin"].ok("POST", "/api/v2/keys", key_envelope(key_resource(uniq("m"))), headers=h)["resources"][0]["id"]


def deleted_key(w):
    k = new_key(w)
    w["admin"].ok("DELETE", f"/api/v2/keys/{k}")
    return k


def dual_auth_key(w, set_for_deletion=False):
    k = new_key(w)
    w["admin"].ok("PUT", f"/api/v2/keys/{k}/policies", policy_envelope(
        {"type": POLICY_TYPE, "dualAuthDelete": {"enabled": True}}), params={"policy": "dualAuthDelete"})
    if set_for_deletion:
        w["admin"].ok("POST", f"/api/v2/keys/{k}/actions/setKeyForDeletion")
    return k


def disabled_key(w):
    k = new_key(w)
    w["admin"].ok("POST", f"/api/v2/keys/{k}/actions/disable")
    return k


def crn():
    return f"crn:v1:bluemix:public:cloud-object-storage:global:a/matrix:inst:bucket:{uniq('b')}"


def reg_body():
    return {"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
            "resources": [{"preventKeyDeletion": False, "description": "matrix", "registrationMetadata": "m"}]}


def registered(w):
    """A registration made by a service ID that holds Reader (registrations are service-only)."""
    c = crn()
    w["callers"][R].ok("POST", f"/api/v2/keys/{w['shared']}/registrations/{quote(c, safe='')}", reg_body())
    return c


def wrapped(w):
    return w["admin"].ok("POST", f"/api/v2/keys/{w['shared']}/actions/wrap", {})["ciphertext"]


def with_alias(w):
    k, a = new_key(w), uniq("al")
    w["admin"].ok("POST", f"/api/v2/keys/{k}/aliases/{a}")
    return k, a


def new_ring(w):
    ring = uniq("ring")
    w["admin"].ok("POST", f"/api/v2/key_rings/{ring}")
    return ring


ROTATION = policy_envelope({"type": POLICY_TYPE, "rotation": {"interval_month": 3}})
METRICS = policy_envelope({"policy_type": "metrics", "policy_data": {"enabled": False}})
KEY_BODY = lambda: key_envelope(key_resource(uniq("c")))  # noqa: E731

# (name, roles allowed, prepare(world) -> arg, call(caller, world, arg) -> response)
OPS = [
    ("HEAD keys", LIST, None, lambda c, w, a: c.req("HEAD", "/api/v2/keys")),
    ("GET keys", LIST, None, lambda c, w, a: c.req("GET", "/api/v2/keys")),
    ("POST keys", WM, None, lambda c, w, a: c.req("POST", "/api/v2/keys", KEY_BODY())),
    ("POST keys_with_policy_overrides", WM, None,
     lambda c, w, a: c.req("POST", "/api/v2/keys_with_policy_overrides", KEY_BODY())),
    ("GET keys/registrations", READ, None, lambda c, w, a: c.req("GET", "/api/v2/keys/registrations")),
    ("GET key", READ, None, lambda c, w, a: c.req("GET", f"/api/v2/keys/{w['shared']}")),
    ("GET key metadata", READ, None, lambda c, w, a: c.req("GET", f"/api/v2/keys/{w['shared']}/metadata")),
    ("GET key versions", READ, None, lambda c, w, a: c.req("GET", f"/api/v2/keys/{w['shared']}/versions")),
    ("POST key?action=wrap", READ, None,
     lambda c, w, a: c.req("POST", f"/api/v2/keys/{w['shared']}", {}, params={"action": "wrap"})),
    ("wrap", READ, None, lambda c, w, a: c.req("POST", f"/api/v2/keys/{w['shared']}/actions/wrap", {})),
    ("unwrap", READ, wrapped,
     lambda c, w, a: c.req("POST", f"/api/v2/keys/{w['shared']}/actions/unwrap", {"ciphertext": a})),
    ("rewrap", READ, wrapped,
     lambda c, w, a: c.req("POST", f"/api/v2/keys/{w['shared']}/actions/rewrap", {"ciphertext": a})),
    ("rotate", WM, new_key, lambda c, w, a: c.req("POST", f"/api/v2/keys/{a}/actions/rotate")),
    ("disable", {M}, new_key, lambda c, w, a: c.req("POST", f"/api/v2/keys/{a}/actions/disable")),
    ("enable", {M}, disabled_key, lambda c, w, a: c.req("POST", f"/api/v2/keys/{a}/actions/enable")),
    ("setKeyForDeletion", WM, dual_auth_key,
     lambda c, w, a: c.req("POST", f"/api/v2/keys/{a}/actions/setKeyForDeletion")),
    ("unsetKeyForDeletion", WM, lambda w: dual_auth_key(w, True),
     lambda c, w, a: c.req("POST", f"/api/v2/keys/{a}/actions/unsetKeyForDeletion")),
    ("sync", WM, None, lambda c, w, a: c.req("POST", f"/api/v2/keys/{w['shared']}/actions/sync")),
    ("PATCH key (move ring)", {M}, new_key,
     lambda c, w, a: c.req("PATCH", f"/api/v2/keys/{a}", {"keyRingID": "matrix-b"})),
    ("DELETE key", {M}, new_key, lambda c, w, a: c.req("DELETE", f"/api/v2/keys/{a}")),
    ("restore", {M}, deleted_key, lambda c, w, a: c.req("POST", f"/api/v2/keys/{a}/restore")),
    ("purge", {KP}, deleted_key, lambda c, w, a: c.req("DELETE", f"/api/v2/keys/{a}/purge")),
    ("GET key policies", {M}, None, lambda c, w, a: c.req("GET", f"/api/v2/keys/{w['shared']}/policies")),
    ("PUT key policies", {M}, new_key,
     lambda c, w, a: c.req("PUT", f"/api/v2/keys/{a}/policies", ROTATION, params={"policy": "rotation"})),
    ("GET key registrations", READ, None,
     lambda c, w, a: c.req("GET", f"/api/v2/keys/{w['shared']}/registrations")),
    ("POST registration", READ, lambda w: crn(),
     lambda c, w, a: c.req("POST", f"/api/v2/keys/{w['shared']}/registrations/{quote(a, safe='')}", reg_body())),
    ("PUT registration", READ, registered,
     lambda c, w, a: c.req("PUT", f"/api/v2/keys/{w['shared']}/registrations/{quote(a, safe='')}", reg_body())),
    ("PATCH registration", READ, registered,
     lambda c, w, a: c.req("PATCH", f"/api/v2/keys/{w['shared']}/registrations/{quote(a, safe='')}", reg_body())),
    ("DELETE registration", READ, registered,
     lambda c, w, a: c.req("DELETE", f"/api/v2/keys/{w['shared']}/registrations/{quote(a, safe='')}")),
    ("POST registrations?action=deactivate", READ, registered,
     lambda c, w, a: c.req("POST", f"/api/v2/keys/{w['shared']}/registrations", params={"action": "deactivate"},
                           body={"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
                                 "resources": [{"resourceCrn": a}]})),
    ("POST alias", WM, new_key, lambda c, w, a: c.req("POST", f"/api/v2/keys/{a}/aliases/{uniq('al')}")),
    ("DELETE alias", WM, with_alias, lambda c, w, a: c.req("DELETE", f"/api/v2/keys/{a[0]}/aliases/{a[1]}")),
    ("GET instance policies", {M}, None, lambda c, w, a: c.req("GET", "/api/v2/instance/policies")),
    ("PUT instance policies", {M}, None,
     lambda c, w, a: c.req("PUT", "/api/v2/instance/policies", METRICS, params={"policy": "metrics"})),
    ("GET allowed_ip_port", {M}, None, lambda c, w, a: c.req("GET", "/api/v2/instance/allowed_ip_port")),
    ("POST import_token", WM, None,
     lambda c, w, a: c.req("POST", "/api/v2/import_token", {"expiration": 3600, "maxAllowedRetrievals": 500})),
    ("GET import_token", WM, None, lambda c, w, a: c.req("GET", "/api/v2/import_token")),
    ("GET key_rings", LIST, None, lambda c, w, a: c.req("GET", "/api/v2/key_rings")),
    ("POST key_ring", WM, None, lambda c, w, a: c.req("POST", f"/api/v2/key_rings/{uniq('r')}")),
    ("DELETE key_ring", {M}, new_ring, lambda c, w, a: c.req("DELETE", f"/api/v2/key_rings/{a}")),
]

CASES = [(op, caller) for op in OPS for caller in ROLES + DENIED_CALLERS]


@pytest.mark.parametrize("op, caller", CASES, ids=[f"{o[0]}-{c}" for o, c in CASES])
def test_matrix(world, op, caller):
    name, allowed, prepare, call = op
    arg = prepare(world) if prepare else None
    r = call(world["callers"][caller], world, arg)
    where = f"{name} as {caller}: {r.status_code} {r.text[:300]}"
    if caller in allowed:
        assert 200 <= r.status_code < 300, where
    elif r.request.method == "HEAD":
        assert r.status_code == 401, where
    else:
        assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)


def test_every_router_route_is_in_the_matrix():
    """The matrix names every Key Protect route of the route table (api/routes.rs) (a new route must join it)."""
    import re
    from pathlib import Path
    src = (Path(__file__).resolve().parents[2] / "crates/keyhold-server/src/api/routes.rs").read_text()
    routes = {r for r in re.findall(r'"(/api/v2/[^"]*)"', src)}
    covered = {
        "/api/v2/keys", "/api/v2/keys_with_policy_overrides", "/api/v2/keys/registrations", "/api/v2/keys/{id}",
        "/api/v2/keys/{id}/metadata", "/api/v2/keys/{id}/purge", "/api/v2/keys/{id}/restore",
        "/api/v2/keys/{id}/versions", "/api/v2/keys/{id}/actions/{action}", "/api/v2/keys/{id}/policies",
        "/api/v2/keys/{id}/registrations", "/api/v2/keys/{id}/registrations/{crn}",
        "/api/v2/keys/{id}/aliases/{alias}", "/api/v2/instance/policies", "/api/v2/instance/allowed_ip_port",
        "/api/v2/import_token", "/api/v2/key_rings", "/api/v2/key_rings/{ring}"}
    assert routes == covered, f"routes not in the matrix: {routes - covered}"


# ---- scoped grants: a ring or a key, and nothing beyond ----

def test_ring_scoped_grant_works_in_its_ring_only(world):
    c, admin = world["ring_caller"], world["admin"]
    k_a, k_b = new_key(world, "matrix-a"), new_key(world, "matrix-b")
    ct = c.ok("POST", f"/api/v2/keys/{k_a}/actions/wrap", {})["ciphertext"]
    c.ok("POST", f"/api/v2/keys/{k_a}/actions/unwrap", {"ciphertext": ct})
    c.ok("POST", f"/api/v2/keys/{k_a}/actions/rotate")
    c.ok("GET", f"/api/v2/keys/{k_a}/metadata")
    created = c.ok("POST", "/api/v2/keys", key_envelope(key_resource(uniq("in-a"))),
                   headers={"X-Kms-Key-Ring": "matrix-a"})["resources"][0]
    assert created["keyRingID"] == "matrix-a"
    listed = c.ok("GET", "/api/v2/keys", headers={"X-Kms-Key-Ring": "matrix-a"})["resources"]
    assert {k["id"] for k in listed} >= {k_a, created["id"]}
    for method, path, body, headers in [
            ("POST", f"/api/v2/keys/{k_b}/actions/wrap", {}, None),
            ("GET", f"/api/v2/keys/{k_b}", None, None),
            ("POST", f"/api/v2/keys/{k_b}/actions/rotate", None, None),
            ("DELETE", f"/api/v2/keys/{k_b}", None, None),
            ("GET", "/api/v2/keys", None, None),
            ("GET", "/api/v2/keys", None, {"X-Kms-Key-Ring": "matrix-b"}),
            ("POST", "/api/v2/keys", key_envelope(key_resource(uniq("in-b"))), {"X-Kms-Key-Ring": "matrix-b"}),
            ("POST", "/api/v2/keys", key_envelope(key_resource(uniq("no-ring"))), None)]:
        r = c.req(method, path, body, headers=headers)
        assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)
    # Manager on ring A deletes its keys, KeyPurge purges them.
    c.ok("DELETE", f"/api/v2/keys/{k_a}")
    c.ok("DELETE", f"/api/v2/keys/{k_a}/purge")
    admin.ok("GET", f"/api/v2/keys/{k_b}/metadata")


def test_key_scoped_grant_and_revocation(world):
    srv, admin = world["srv"], world["admin"]
    k1, k2 = new_key(world), new_key(world)
    sid, key = service_id_with_key(srv, admin, uniq("matrix-key"))
    c = Caller(srv, key)
    assert_kp_error(c.req("POST", f"/api/v2/keys/{k1}/actions/wrap", {}), 401, reasons_optional=True)
    grant(srv, admin, sid, [W], serviceInstance=srv.instance_id, resourceType="key", resource=k1)
    ct = c.ok("POST", f"/api/v2/keys/{k1}/actions/wrap", {})["ciphertext"]
    c.ok("POST", f"/api/v2/keys/{k1}/actions/rotate")
    assert_kp_error(c.req("POST", f"/api/v2/keys/{k1}/actions/disable"), 401, reasons_optional=True)
    assert_kp_error(c.req("POST", f"/api/v2/keys/{k2}/actions/wrap", {}), 401, reasons_optional=True)
    # An alias names the same key: the grant follows the key, not the name.
    alias = uniq("al")
    admin.ok("POST", f"/api/v2/keys/{k1}/aliases/{alias}")
    c.ok("POST", f"/api/v2/keys/{alias}/actions/unwrap", {"ciphertext": ct})
    # Deleting the policy takes the grant away at once (same node: no staleness).
    pols = requests.get(srv.url + "/v1/policies", params={"iam_id": sid},
                        headers={"Authorization": "Bearer " + admin.token()}, timeout=30).json()["policies"]
    assert len(pols) == 1
    r = requests.delete(srv.url + f"/v1/policies/{pols[0]['id']}",
                        headers={"Authorization": "Bearer " + admin.token()}, timeout=30)
    assert r.status_code == 204
    assert_kp_error(c.req("POST", f"/api/v2/keys/{k1}/actions/wrap", {}), 401, reasons_optional=True)
