"""Platform-role × account-level endpoint matrix (keyprotect-api.md Appendix B, platform
rules), over real HTTP.

Routes: IAM (`/v1/whoami|users|serviceids|apikeys|policies`, `/v2/groups`), the resource
controller (`/v2/resource_instances`, `/v2/resource_keys`), connection info
(`/crypto_v1|v2/instances/{id}`), authorizations (`/v1/authorizations`) and the audit reads
(`/audit/v1/*`). Callers: service IDs holding one platform role account-wide (Viewer,
Operator, Editor, Administrator), one holding Viewer / Editor on a single hs-crypto instance
only, one holding service roles (Manager, KeyPurge on kms) and no platform role, a
storage-service instance's credential (`/v2/resource_keys`), no token, an expired token of
this server and a tampered one. Rules: view — any platform role; create/update/delete
instances and credentials — Editor/Administrator; authorizations, IAM and others' API keys —
Administrator (account-wide); audit reads — Administrator; one's own identity and API keys —
anyone authenticated; the audit public keys — anyone. Refusals: IAM routes answer in IAM's
shape (401 bad token, 403 no role), the others in the Key Protect envelope (401
UNAUTHORIZED_ERR). Identities and policies are made once; cases prepare what they act on."""
import json
import re
import time
from pathlib import Path

import pytest
import requests

from api_helpers import APIKEY_GRANT, assert_kp_error, b64url_decode, b64url_encode, uniq

LIFETIME = 4  # seconds: short, so the "expired" caller holds a truly expired token of this server
ACCOUNT = "dev-account"
PR = "crn:v1:bluemix:public:iam::::role:"
SR = "crn:v1:bluemix:public:iam::::serviceRole:"
PLATFORM = ["Viewer", "Operator", "Editor", "Administrator"]
SCOPED = ["inst-Viewer", "inst-Editor"]
NO_PLATFORM = ["svc-Manager", "storage-credential"]
BAD_TOKEN = ["no-token", "expired", "tampered"]
CALLERS = PLATFORM + SCOPED + NO_PLATFORM + BAD_TOKEN
AUTHENTICATED = set(PLATFORM + SCOPED + NO_PLATFORM)
ADMIN = {"Administrator"}
VIEW_ACCOUNT = set(PLATFORM)
VIEW_INSTANCE = set(PLATFORM + SCOPED)
EDIT_ACCOUNT = {"Editor", "Administrator"}
EDIT_INSTANCE = EDIT_ACCOUNT | {"inst-Editor"}
# A storage instance's credential is no user or service ID: it holds no IAM API keys of its own
# (its credentials are resource keys), so creating one "for itself" finds no such identity (404).
KEY_OWNERS = AUTHENTICATED - {"storage-credential"}


class Caller:
    """One principal's calls (token only, no Bluemix-Instance); renews its token before it expires.
    `mode`: "apikey", "none" (no Authorization), "fixed" (a given token), "tampered" (a fresh
    token of the dev admin whose claims are changed and signature kept)."""

    def __init__(self, srv, apikey=None, mode="apikey", token=None):
        self.srv, self.apikey, self.mode, self._token, self._at = srv, apikey, mode, token, 0.0
        self.iam_id = None

    def _fresh(self, apikey):
        r = requests.post(self.srv.url + "/identity/token", data={"grant_type": APIKEY_GRANT, "apikey": apikey},
                          timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def token(self):
        if self.mode == "apikey" and (self._token is None or time.time() - self._at > LIFETIME - 2):
            self._token, self._at = self._fresh(self.apikey), time.time()
        if self.mode == "tampered":
            return forge(self._fresh(self.srv.apikey), {"sub": "dev-admin-x", "iam_id": "dev-admin-x"})
        return self._token

    def req(self, method, path, body=None, params=None):
        h = {} if self.mode == "none" else {"Authorization": "Bearer " + self.token()}
        return requests.request(method, self.srv.url + path, json=body, params=params, headers=h, timeout=60)

    def ok(self, method, path, body=None, params=None):
        r = self.req(method, path, body, params)
        assert 200 <= r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None


def forge(token, claims):
    h, c, s = token.split(".")
    cd = json.loads(b64url_decode(c))
    cd.update(claims)
    return ".".join([h, b64url_encode(json.dumps(cd).encode()), s])


def assert_iam_error(r, status):
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"errorCode", "errorMessage", "context"}, body
    assert body["errorCode"].startswith("BXNIM") and body["errorMessage"], body
    assert body["context"]["requestId"], body


def policy_body(iam_id, roles, **res):
    attrs = [{"name": "accountId", "value": ACCOUNT}] + [{"name": k, "value": v} for k, v in res.items()]
    return {"type": "access", "subjects": [{"attributes": [{"name": "iam_id", "value": iam_id}]}],
            "roles": [{"role_id": r} for r in roles], "resources": [{"attributes": attrs}]}


def hs_instance(admin):
    return admin.ok("POST", "/v2/resource_instances",
                    {"name": uniq("pm-hs"), "resource_plan_id": "hs-crypto-standard", "parameters": {"units": 1}})


def scope(w, caller, guid):
    """Gives an instance-scoped caller its role on the instance `guid` too."""
    if caller in SCOPED:
        role = caller.split("-", 1)[1]
        w["admin"].ok("POST", "/v1/policies", policy_body(
            w["callers"][caller].iam_id, [PR + role], serviceName="hs-crypto", serviceInstance=guid))


@pytest.fixture(scope="module")
def world(server_factory):
    srv = server_factory(extra=["--token-lifetime", str(LIFETIME)])
    admin = Caller(srv, srv.apikey)
    hs = hs_instance(admin)
    callers = {}

    def service_id(name):
        sid = admin.ok("POST", "/v1/serviceids", {"name": uniq(name)})["iam_id"]
        c = Caller(srv, admin.ok("POST", "/v1/apikeys", {"name": name, "iam_id": sid})["apikey"])
        c.iam_id = sid
        return c

    for role in PLATFORM:
        c = callers[role] = service_id(f"pm-{role}")
        admin.ok("POST", "/v1/policies", policy_body(c.iam_id, [PR + role]))
    for name in SCOPED:
        callers[name] = service_id(f"pm-{name}")
    w = {"srv": srv, "admin": admin, "hs": hs, "callers": callers}
    for name in SCOPED:
        scope(w, name, hs["guid"])
    c = callers["svc-Manager"] = service_id("pm-svc")
    admin.ok("POST", "/v1/policies", policy_body(c.iam_id, [SR + "Manager", SR + "KeyPurge"], serviceName="kms"))
    cos = admin.ok("POST", "/v2/resource_instances", {"name": uniq("pm-cos"), "service": "cloud-object-storage"})
    cred = admin.ok("POST", "/v2/resource_keys", {"source": cos["guid"], "name": "pm-cos"})["credentials"]
    callers["storage-credential"] = Caller(srv, cred["apikey"])
    callers["storage-credential"].iam_id = cred["iam_serviceid_crn"]
    callers["no-token"] = Caller(srv, mode="none")
    callers["tampered"] = Caller(srv, mode="tampered")
    expired = Caller(srv, mode="fixed", token=Caller(srv, srv.apikey).token())
    w["user"] = admin.ok("POST", "/v1/users", {"user_id": uniq("pm") + "@example.com"})["iam_id"]
    w["sid"] = admin.ok("POST", "/v1/serviceids", {"name": uniq("pm-target")})["iam_id"]
    w["group"] = admin.ok("POST", "/v2/groups", {"name": uniq("pm-group")})["id"]
    w["key"] = admin.ok("POST", "/v1/apikeys", {"name": "pm-other", "iam_id": w["sid"]})["id"]
    w["policy"] = admin.ok("POST", "/v1/policies", policy_body(w["sid"], [SR + "Reader"], serviceName="kms"))["id"]
    w["authz"] = new_authorization(w)
    time.sleep(LIFETIME + 0.5)
    callers["expired"] = expired
    return w


# ---- preparations (by the administrator, or by the caller for its own API keys) ----

def new_user(w, caller):
    return w["admin"].ok("POST", "/v1/users", {"user_id": uniq("u") + "@example.com"})["iam_id"]


def new_sid(w, caller):
    return w["admin"].ok("POST", "/v1/serviceids", {"name": uniq("s")})["iam_id"]


def new_group(w, caller):
    return w["admin"].ok("POST", "/v2/groups", {"name": uniq("g")})["id"]


def group_with_member(w, caller):
    g = new_group(w, caller)
    w["admin"].ok("PUT", f"/v2/groups/{g}/members", {"members": [{"iam_id": w["sid"]}]})
    return g


def others_key(w, caller):
    return w["admin"].ok("POST", "/v1/apikeys", {"name": uniq("k"), "iam_id": w["sid"]})["id"]


def own_key(w, caller):
    """The caller's own API key, made by the caller (any authenticated caller may)."""
    if caller not in KEY_OWNERS:
        return others_key(w, caller)
    return w["callers"][caller].ok("POST", "/v1/apikeys", {"name": uniq("own")})["id"]


def new_policy(w, caller):
    return w["admin"].ok("POST", "/v1/policies", policy_body(w["sid"], [SR + "Reader"], serviceName="kms"))["id"]


def new_authorization(w, caller=None):
    return w["admin"].ok("POST", "/v1/authorizations", {
        "source": {"service_name": "cloud-object-storage"},
        "target": {"service_name": "kms"}, "roles": ["Reader"]})["id"]


def scoped_instance(w, caller):
    guid = hs_instance(w["admin"])["guid"]
    scope(w, caller, guid)
    return guid


def instances_listed(w, caller, r):
    """Listing is allowed to every caller, but shows only the instances it may view."""
    guids = {i["guid"] for i in r.json()["resources"]}
    if caller in VIEW_INSTANCE:
        assert w["hs"]["guid"] in guids, caller
    else:
        assert guids == set(), (caller, guids)


IAM, KP = "iam", "kp"
OWN_CREATE = ("POST", "/v1/apikeys", IAM, KEY_OWNERS, None,
              lambda c, w, a: c.req("POST", "/v1/apikeys", {"name": uniq("own")}), None)
# (method, route template, shape, allowed callers, prepare(world, caller) -> arg, call(c, w, arg), check)
OPS = [
    ("GET", "/v1/whoami", IAM, AUTHENTICATED, None, lambda c, w, a: c.req("GET", "/v1/whoami"), None),
    ("GET", "/v1/users", IAM, ADMIN, None, lambda c, w, a: c.req("GET", "/v1/users"), None),
    ("POST", "/v1/users", IAM, ADMIN, None,
     lambda c, w, a: c.req("POST", "/v1/users", {"user_id": uniq("n") + "@example.com"}), None),
    ("GET", "/v1/users/{id}", IAM, ADMIN, None, lambda c, w, a: c.req("GET", f"/v1/users/{w['user']}"), None),
    ("DELETE", "/v1/users/{id}", IAM, ADMIN, new_user, lambda c, w, a: c.req("DELETE", f"/v1/users/{a}"), None),
    ("GET", "/v1/serviceids", IAM, ADMIN, None, lambda c, w, a: c.req("GET", "/v1/serviceids"), None),
    ("POST", "/v1/serviceids", IAM, ADMIN, None,
     lambda c, w, a: c.req("POST", "/v1/serviceids", {"name": uniq("n")}), None),
    ("GET", "/v1/serviceids/{id}", IAM, ADMIN, None,
     lambda c, w, a: c.req("GET", f"/v1/serviceids/{w['sid']}"), None),
    ("DELETE", "/v1/serviceids/{id}", IAM, ADMIN, new_sid,
     lambda c, w, a: c.req("DELETE", f"/v1/serviceids/{a}"), None),
    ("GET", "/v2/groups", IAM, ADMIN, None, lambda c, w, a: c.req("GET", "/v2/groups"), None),
    ("POST", "/v2/groups", IAM, ADMIN, None, lambda c, w, a: c.req("POST", "/v2/groups", {"name": uniq("n")}), None),
    ("GET", "/v2/groups/{id}", IAM, ADMIN, None, lambda c, w, a: c.req("GET", f"/v2/groups/{w['group']}"), None),
    ("DELETE", "/v2/groups/{id}", IAM, ADMIN, new_group, lambda c, w, a: c.req("DELETE", f"/v2/groups/{a}"), None),
    ("GET", "/v2/groups/{id}/members", IAM, ADMIN, None,
     lambda c, w, a: c.req("GET", f"/v2/groups/{w['group']}/members"), None),
    ("PUT", "/v2/groups/{id}/members", IAM, ADMIN, new_group,
     lambda c, w, a: c.req("PUT", f"/v2/groups/{a}/members", {"members": [{"iam_id": w["sid"]}]}), None),
    ("DELETE", "/v2/groups/{id}/members/{iam_id}", IAM, ADMIN, group_with_member,
     lambda c, w, a: c.req("DELETE", f"/v2/groups/{a}/members/{w['sid']}"), None),
    # API keys: one's own — anyone authenticated; another principal's — the Administrator.
    ("GET", "/v1/apikeys", IAM, AUTHENTICATED, None, lambda c, w, a: c.req("GET", "/v1/apikeys"), None),
    ("GET", "/v1/apikeys", IAM, ADMIN, None,
     lambda c, w, a: c.req("GET", "/v1/apikeys", params={"iam_id": w["sid"]}), None),
    OWN_CREATE,
    ("POST", "/v1/apikeys", IAM, ADMIN, None,
     lambda c, w, a: c.req("POST", "/v1/apikeys", {"name": uniq("other"), "iam_id": w["sid"]}), None),
    ("GET", "/v1/apikeys/{id}", IAM, KEY_OWNERS, own_key, lambda c, w, a: c.req("GET", f"/v1/apikeys/{a}"), None),
    ("GET", "/v1/apikeys/{id}", IAM, ADMIN, None, lambda c, w, a: c.req("GET", f"/v1/apikeys/{w['key']}"), None),
    ("DELETE", "/v1/apikeys/{id}", IAM, KEY_OWNERS, own_key,
     lambda c, w, a: c.req("DELETE", f"/v1/apikeys/{a}"), None),
    ("DELETE", "/v1/apikeys/{id}", IAM, ADMIN, others_key,
     lambda c, w, a: c.req("DELETE", f"/v1/apikeys/{a}"), None),
    ("POST", "/v1/apikeys/{id}/rotate", IAM, KEY_OWNERS, own_key,
     lambda c, w, a: c.req("POST", f"/v1/apikeys/{a}/rotate"), None),
    ("POST", "/v1/apikeys/{id}/rotate", IAM, ADMIN, others_key,
     lambda c, w, a: c.req("POST", f"/v1/apikeys/{a}/rotate"), None),
    ("GET", "/v1/policies", IAM, ADMIN, None, lambda c, w, a: c.req("GET", "/v1/policies"), None),
    ("POST", "/v1/policies", IAM, ADMIN, None,
     lambda c, w, a: c.req("POST", "/v1/policies", policy_body(w["sid"], [SR + "Writer"], serviceName="kms")), None),
    ("GET", "/v1/policies/{id}", IAM, ADMIN, None, lambda c, w, a: c.req("GET", f"/v1/policies/{w['policy']}"), None),
    ("DELETE", "/v1/policies/{id}", IAM, ADMIN, new_policy,
     lambda c, w, a: c.req("DELETE", f"/v1/policies/{a}"), None),
    # resource controller and connection info
    ("POST", "/v2/resource_instances", KP, EDIT_ACCOUNT, None,
     lambda c, w, a: c.req("POST", "/v2/resource_instances", {"name": uniq("n"), "resource_plan_id":
                                                              "hs-crypto-standard"}), None),
    ("GET", "/v2/resource_instances", KP, AUTHENTICATED, None,
     lambda c, w, a: c.req("GET", "/v2/resource_instances"), instances_listed),
    ("GET", "/v2/resource_instances/{id}", KP, VIEW_INSTANCE, None,
     lambda c, w, a: c.req("GET", f"/v2/resource_instances/{w['hs']['guid']}"), None),
    ("PATCH", "/v2/resource_instances/{id}", KP, EDIT_INSTANCE, None,
     lambda c, w, a: c.req("PATCH", f"/v2/resource_instances/{w['hs']['guid']}", {"parameters": {"units": 2}}),
     None),
    ("DELETE", "/v2/resource_instances/{id}", KP, EDIT_INSTANCE, scoped_instance,
     lambda c, w, a: c.req("DELETE", f"/v2/resource_instances/{a}"), None),
    ("POST", "/v2/resource_keys", KP, EDIT_INSTANCE, None,
     lambda c, w, a: c.req("POST", "/v2/resource_keys", {"source": w["hs"]["guid"], "name": uniq("rk")}), None),
    ("GET", "/crypto_v1/instances/{id}", KP, VIEW_INSTANCE, None,
     lambda c, w, a: c.req("GET", f"/crypto_v1/instances/{w['hs']['guid']}"), None),
    ("GET", "/crypto_v2/instances/{id}", KP, VIEW_INSTANCE, None,
     lambda c, w, a: c.req("GET", f"/crypto_v2/instances/{w['hs']['guid']}"), None),
    # authorizations: account-level, so an instance-scoped role does not reach them
    ("POST", "/v1/authorizations", KP, ADMIN, None, lambda c, w, a: c.req("POST", "/v1/authorizations", {
        "source": {"service_name": "cloud-object-storage"}, "target": {"service_name": "hs-crypto"},
        "roles": ["Reader"]}), None),
    ("GET", "/v1/authorizations", KP, VIEW_ACCOUNT, None, lambda c, w, a: c.req("GET", "/v1/authorizations"), None),
    ("GET", "/v1/authorizations/{id}", KP, VIEW_ACCOUNT, None,
     lambda c, w, a: c.req("GET", f"/v1/authorizations/{w['authz']}"), None),
    ("DELETE", "/v1/authorizations/{id}", KP, ADMIN, new_authorization,
     lambda c, w, a: c.req("DELETE", f"/v1/authorizations/{a}"), None),
    # audit reads
    ("GET", "/audit/v1/events", KP, ADMIN, None,
     lambda c, w, a: c.req("GET", "/audit/v1/events", params={"limit": 5}), None),
    ("GET", "/audit/v1/export", KP, ADMIN, None, lambda c, w, a: c.req("GET", "/audit/v1/export"), None),
    ("GET", "/audit/v1/keys", KP, set(CALLERS), None, lambda c, w, a: c.req("GET", "/audit/v1/keys"), None),
]


def op_id(op, i):
    return f"{op[0]} {op[1]}#{i}"


CASES = [(i, caller) for i in range(len(OPS)) for caller in CALLERS]


@pytest.mark.parametrize("i, caller", CASES, ids=[f"{op_id(OPS[i], i)}-{c}" for i, c in CASES])
def test_matrix(world, i, caller):
    method, route, shape, allowed, prepare, call, check = OPS[i]
    arg = prepare(world, caller) if prepare else None
    r = call(world["callers"][caller], world, arg)
    where = f"{method} {route} as {caller}: {r.status_code} {r.text[:300]}"
    if caller in allowed:
        assert 200 <= r.status_code < 300, where
        if check:
            check(world, caller, r)
    elif shape == IAM and caller == "storage-credential" and OPS[i] is OWN_CREATE:
        assert_iam_error(r, 404)
    elif shape == IAM:
        assert_iam_error(r, 401 if caller in BAD_TOKEN else 403)
    else:
        assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)


# Routes of the table that are not account-level, and where they are tested instead.
NOT_ACCOUNT_LEVEL = {
    ("POST", "/identity/token"), ("POST", "/oidc/token"), ("GET", "/identity/keys"),  # public: test_api_auth
    ("GET", "/ceremony/v1/status"), ("POST", "/ceremony/v1/commands"),  # signed commands: ceremony tests
    ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/openapi.json"),  # test_observability
}


def test_every_account_level_route_is_in_the_matrix():
    """Every route of the route table (api/routes.rs) outside /api/v2 (test_roles_matrix.py) and the
    public/ops/ceremony routes above is in the matrix: a new account-level route must join it."""
    src = (Path(__file__).resolve().parents[2] / "crates/keyhold-server/src/api/routes.rs").read_text()
    table = set(re.findall(r'r\(\s*M::(\w+),\s*"([^"]+)"', src))
    assert len(table) > 60, "the route table could not be parsed"
    account_level = {r for r in table if not r[1].startswith("/api/v2/")} - NOT_ACCOUNT_LEVEL
    covered = {(op[0], op[1]) for op in OPS}
    assert account_level == covered, f"not in the matrix: {account_level - covered}; stale: {covered - account_level}"


def test_instance_scoped_roles_stay_on_their_instance(world):
    """Viewer / Editor on one instance give nothing on another, nor account-wide."""
    other = hs_instance(world["admin"])["guid"]
    for name in SCOPED:
        c = world["callers"][name]
        for method, path, body in [("GET", f"/v2/resource_instances/{other}", None),
                                   ("GET", f"/crypto_v2/instances/{other}", None),
                                   ("PATCH", f"/v2/resource_instances/{other}", {"name": uniq("x")}),
                                   ("DELETE", f"/v2/resource_instances/{other}", None),
                                   ("POST", "/v2/resource_keys", {"source": other}),
                                   ("POST", "/v2/resource_instances", {"name": uniq("x"),
                                                                       "resource_plan_id": "hs-crypto-standard"})]:
            assert_kp_error(c.req(method, path, body), 401, "UNAUTHORIZED_ERR", reasons_optional=True)
    world["admin"].ok("GET", f"/v2/resource_instances/{other}")


def test_whoami_reports_the_platform_roles(world):
    for role in PLATFORM:
        me = world["callers"][role].ok("GET", "/v1/whoami")
        assert role in me["platform_roles"], me
        assert me["iam_admin"] == (role == "Administrator"), me
    me = world["callers"]["svc-Manager"].ok("GET", "/v1/whoami")
    assert me["platform_roles"] == [] and not me["iam_admin"], me


def test_a_new_user_holds_only_what_its_policies_give(world):
    """Only the dev administrators hold every platform role; a user created later starts with none."""
    admin, hs = world["admin"], world["hs"]["guid"]
    uid = admin.ok("POST", "/v1/users", {"user_id": uniq("plain") + "@example.com"})["iam_id"]
    user = Caller(world["srv"], admin.ok("POST", "/v1/apikeys", {"name": "plain", "iam_id": uid})["apikey"])
    me = user.ok("GET", "/v1/whoami")
    assert me["type"] == "user" and me["platform_roles"] == [] and not me["iam_admin"], me
    assert_kp_error(user.req("GET", f"/v2/resource_instances/{hs}"), 401, "UNAUTHORIZED_ERR", reasons_optional=True)
    assert_iam_error(user.req("GET", "/v1/users"), 403)
    admin.ok("POST", "/v1/policies", policy_body(uid, [PR + "Editor"]))
    user.ok("PATCH", f"/v2/resource_instances/{hs}", {"name": uniq("renamed")})
    assert_kp_error(user.req("GET", "/audit/v1/events"), 401, "UNAUTHORIZED_ERR", reasons_optional=True)
