"""Malformed input against every endpoint: bodies (invalid JSON, wrong types, huge strings, deep
nesting), headers, ids, query values and ciphertexts. For each endpoint: no 5xx, the process
stays alive, and nothing changes (keys, versions, policies, rings, registrations, totals)."""
import json
import os
import socket
import uuid

import pytest
import requests

from api_helpers import (POLICY_TYPE, REG_INPUT_TYPE, _NO, assert_kp_error, b64, check_status, crn_path,
                         describe, key_envelope, policy_envelope)

MI = 1024 * 1024
# statuses produced by the application (not by the HTTP layer: 405/413/414/431), which must carry
# the Key Protect error envelope
APP_ERRORS = (400, 401, 403, 404, 409, 410, 422)
CRN = "crn:v1:bluemix:public:cloud-object-storage:global:a/malacct:malinst:bucket:mal"


# --- the seeded, fixed state ---------------------------------------------------------------

@pytest.fixture(scope="module")
def mal(server_factory):
    srv = server_factory()
    c, svc = srv.client(), srv.client(srv.service_apikey)
    root = c.root_key(name="mal-root", aliases=["mal-alias"])
    check_status(c.put(f"/api/v2/keys/{root['id']}/policies",
                       policy_envelope({"type": POLICY_TYPE, "rotation": {"enabled": True, "interval_month": 3}}),
                       params={"policy": "rotation"}), 200)
    check_status(svc.post(f"/api/v2/keys/{root['id']}/registrations/{crn_path(CRN)}",
                          {"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
                           "resources": [{"preventKeyDeletion": False, "description": "d",
                                          "registrationMetadata": "m"}]}), 200, 201, 204)
    std = c.standard_key(name="mal-std")
    susp = c.root_key(name="mal-suspended")
    check_status(c.action(susp["id"], "disable"), 204)
    gone = c.root_key(name="mal-deleted")
    c.delete_key(gone["id"])
    c.create_ring("mal-ring")
    check_status(c.put("/api/v2/instance/policies",
                       policy_envelope({"policy_type": "metrics", "policy_data": {"enabled": True}}),
                       params={"policy": "metrics"}), 204)
    ct = c.wrap(root["id"], b"mal-dek", aad=["a"])["ciphertext"]
    return dict(srv=srv, c=c, svc=svc, root=root["id"], std=std["id"], susp=susp["id"], gone=gone["id"], ct=ct,
                all=[root["id"], std["id"], susp["id"], gone["id"]])


def snapshot(m):
    c = m["c"]
    s = {}

    def get(path, params=None):
        r = c.get(path, params=params)
        return r.status_code, r.json() if r.content else None

    s["keys"] = get("/api/v2/keys", {"state": "0,1,2,3,5", "limit": "5000", "sort": "id"})
    s["total"] = c.head("/api/v2/keys", params={"state": "0,1,2,3,5"}).headers.get("Key-Total")
    for kid in m["all"]:
        s[kid] = [get(f"/api/v2/keys/{kid}"),
                  get(f"/api/v2/keys/{kid}/versions", {"allKeyStates": "true"}),
                  get(f"/api/v2/keys/{kid}/policies"),
                  get(f"/api/v2/keys/{kid}/registrations")]
    s["rings"] = get("/api/v2/key_rings")
    s["ipol"] = get("/api/v2/instance/policies")
    s["regs"] = get("/api/v2/keys/registrations")
    return s


# --- malformed inputs ------------------------------------------------------------------------

DEEP_ARR = b"[" * 100000 + b"]" * 100000
DEEP_OBJ = b'{"a":' * 50000 + b"1" + b"}" * 50000
DEEP_RES = (b'{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":['
            + b"[" * 20000 + b"]" * 20000 + b"]}")
INVALID_JSON = [b"{", b'{"resources":', b"not json", b"\xff\xfe\xfd", b'{"a":1}}', b"[1,2",
                b'{"resources":[{"name":"x",}]}', b"\x00" * 10, b'{"a":"\\ud800"}', b'{"a":1e999999}',
                DEEP_ARR, DEEP_OBJ, DEEP_RES, b"a" * (900 * 1024), b"{" + b" " * (900 * 1024)]
WRONG_TOP = [b"[]", b"123", b'"str"', b"true",
             {"metadata": "x", "resources": "y"}, {"resources": [1]}, {"resources": [None]},
             {"resources": {"a": 1}}, {"metadata": {"collectionType": 5, "collectionTotal": "one"}, "resources": []},
             {"metadata": {"collectionType": "x", "collectionTotal": 99999999999999999999}, "resources": [{}]}]


def kres(**kw):
    r = {"type": "application/vnd.ibm.kms.key+json", "name": "mal-new", "extractable": False}
    r.update(kw)  # name=None really sends null
    return key_envelope(r)


CREATE_BAD = [kres(name=123), kres(name=None), kres(extractable="x"), kres(payload=5), kres(payload="!!!"),
              kres(aliases="a"), kres(aliases=[1]), kres(aliases=["ünï"]), kres(tags="t"), kres(tags=[None]),
              kres(expirationDate=5), kres(expirationDate="2020-13-45T99:00:00Z"), kres(description=5),
              kres(name="A" * 500000), kres(name="ключ" * 30), kres(description="d" * 300000),
              kres(extractable=False, payload=b64(os.urandom(17))), kres(extractable=True, payload=b64(os.urandom(7501))),
              kres(encryptedNonce="x", iv="y", payload=b64(os.urandom(32))),
              kres(rotation="x"), kres(dualAuthDelete=5), kres(rotation={"enabled": True, "interval_month": 1e300})]
OVERRIDES_BAD = CREATE_BAD + [kres(rotation={"interval_month": "3"}), kres(dualAuthDelete={"enabled": "no"})]
WRAP_BAD = [{"plaintext": 5}, {"plaintext": "!!!"}, {"plaintext": None, "aad": 5}, {"aad": "x"}, {"aad": [1]},
            {"plaintext": "A" * 800000}, {"aad": ["a" * 100000]}, {"plaintext": b64(b"x"), "aad": [["nested"]]},
            {"plaintext": b64(os.urandom(7501))}]


def cipher_bad(m):
    ct = m["ct"]
    raw = __import__("base64").b64decode(ct)
    return [{"ciphertext": 5}, {"ciphertext": []}, {"ciphertext": "!!!"}, {"ciphertext": ""},
            {"ciphertext": b64(os.urandom(64))}, {"ciphertext": b64(raw[:-1])}, {"ciphertext": b64(raw[:8])},
            {"ciphertext": b64(raw + b"\x00")}, {"ciphertext": ct, "aad": 5}, {"ciphertext": ct, "aad": ["b"]},
            {"ciphertext": ct}, {"ciphertext": ct[:-4]}, {"ciphertext": ct + "===="},
            {"ciphertext": "A" * 700000}, {"ciphertext": b64(json.dumps({"ciphertext": "x", "iv": "y",
                                                                      "version": "4.0.0", "handle": str(uuid.uuid4())}).encode())}]


PATCH_BAD = [{"keyRingID": 5}, {"keyRingID": None}, {"keyRingID": "nosuchring"}, {"keyRingID": "A" * 100000},
             {"keyRingID": []}, {"keyRingID": "ключ"}]
KPOL_BAD = [policy_envelope({"type": POLICY_TYPE, "rotation": {"interval_month": "x"}}),
            policy_envelope({"type": POLICY_TYPE, "rotation": "x"}),
            policy_envelope({"type": POLICY_TYPE, "dualAuthDelete": {"enabled": "yes"}}),
            policy_envelope({"type": POLICY_TYPE, "rotation": {"interval_month": 1e300}}),
            policy_envelope({"type": POLICY_TYPE, "rotation": {"interval_month": 99999999999999999999}}),
            policy_envelope({"type": POLICY_TYPE, "rotation": {"interval_month": -99999999999999999999}}),
            policy_envelope({"type": POLICY_TYPE, "rotation": {"interval_month": 4}}, total=-1)]
IPOL_BAD = [policy_envelope({"policy_type": 5}), policy_envelope({"policy_type": "metrics", "policy_data": "x"}),
            policy_envelope({"policy_type": "allowedIP", "policy_data": {"enabled": True, "attributes": {"allowed_ip": "x"}}}),
            policy_envelope({"policy_type": "allowedIP", "policy_data": {"enabled": True, "attributes": {"allowed_ip": [1]}}}),
            policy_envelope({"policy_type": "allowedIP", "policy_data": {"enabled": True, "attributes": {"allowed_ip": ["1.2.3.4/99"]}}}),
            policy_envelope({"policy_type": "rotation", "policy_data": {"enabled": True, "attributes": {"interval_month": 1e300}}}),
            policy_envelope({"policy_type": "keyCreateImportAccess", "policy_data": {"enabled": True, "attributes": "x"}}),
            policy_envelope({"policy_type": "metrics", "policy_data": {"enabled": False}}, total=-1)]
TOKEN_BAD = [{"expiration": "x"}, {"expiration": 1e300}, {"maxAllowedRetrievals": -5},
             {"expiration": 99999999999999999999}, {"maxAllowedRetrievals": 1.5}]


def reg_env(res):
    return {"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1}, "resources": [res]}


REG_BAD = [reg_env({"preventKeyDeletion": "x"}), reg_env({"description": 5}), reg_env({"keyVersionId": 5}),
           reg_env({"keyVersionId": "not-a-version"}), reg_env({"registrationMetadata": ["x"]}),
           reg_env({"description": "d" * 500000})]
DEACT_BAD = [reg_env({"resourceCrn": 5}), reg_env({"resourceCrn": "not-a-crn"}), reg_env({})]

KEY_IDS = ["not-a-uuid", "%D0%BA%D0%BB%D1%8E%D1%87", "a" * 5000, "%00", "%2e%2e", "x%20y",
           "%27%20OR%201%3D1--", "%3Cscript%3E", "00000000-0000-0000-0000-000000000000", "%7B%7D",
           "..%2F..%2Fetc%2Fpasswd", "registrations%2Fx"]
RING_IDS = ["%D0%BA", "a" * 5000, "%00", "x%20y", "default", "mal-ring"]  # last two exist
ALIAS_IDS = ["%D0%BA%D0%BB", "a" * 5000, "%00", "x%20y", "a", "keys", str(uuid.uuid4())]
CRN_IDS = ["not-a-crn", "a" * 5000, "crn%3Av1", "%00"]
# non-UTF-8 percent-encodings in path segments are swept once, in test_non_utf8_path_segments

LIST_Q = [{"limit": "-1"}, {"limit": "abc"}, {"limit": "99999999999999999999"}, {"offset": "99999999999999999999"},
          {"offset": "-1"}, {"limit": "1e3"}, {"limit": ""}, {"state": "9"}, {"state": "1,,5"}, {"state": "ф"},
          {"extractable": "maybe"}, {"sort": "bogus"}, {"sort": ","}, {"sort": "-" * 1000}, {"filter": "garbage"},
          {"filter": "state="}, {"filter": 'creationDate=gt:"x"'}, {"filter": "(" * 1000},
          {"filter": "state=1 " * 50}, {"search": "x" * 20000}, {"search": "exact:"}, {"search": "not:"},
          {"search": "\x00"}, {"search": "escape:"}, {"totalCount": "maybe"}, {"allKeyStates": "maybe"},
          {"preventKeyDeletion": "maybe"}, {"urlEncodedResourceCRNQuery": "%%%"},
          {"urlEncodedResourceCRNQuery": "*" * 5000}, {"limit": ["1", "2"]}, {"state": ["1", "5"]}]

BAD_AUTH = [None, "Bearer x", "Bearer " + "a" * 20000, "Basic Yng6Yng=", "Bearer a.b.c", "Bearer ..",
            "Bearer eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9."]
BAD_INSTANCE = [None, "not-a-uuid", "00000000-0000-0000-0000-000000000000", "x" * 5000, "\xe9\xe8", ""]


# endpoint table: (name, method, path template, valid body, bad bodies, bad-id slot, query set, client)
def endpoints(m):
    ct = m["ct"]
    cb = cipher_bad(m)
    noisy = INVALID_JSON  # for no-body actions (they parse an optional JSON object body)
    full = INVALID_JSON + WRONG_TOP  # envelope bodies
    bare = INVALID_JSON + WRONG_TOP[:4]  # bare-object bodies (unknown members are ignored, like Go)
    valid_create = kres(name="mal-valid-but-unauthorized")
    E = [
        ("head_keys", "HEAD", "/api/v2/keys", _NO, [], None, LIST_Q, "c"),
        ("list_keys", "GET", "/api/v2/keys", _NO, [], None, LIST_Q, "c"),
        ("create_key", "POST", "/api/v2/keys", valid_create, full + CREATE_BAD, None, [], "c"),
        ("create_overrides", "POST", "/api/v2/keys_with_policy_overrides", valid_create, full + OVERRIDES_BAD, None,
         [], "c"),
        ("get_key", "GET", "/api/v2/keys/{key}", _NO, [], "key", [], "c"),
        ("patch_key", "PATCH", "/api/v2/keys/{key}", {"keyRingID": "mal-ring"}, bare + PATCH_BAD, "key", [], "c"),
        ("delete_key", "DELETE", "/api/v2/keys/{key}", _NO, [], "key", [{"force": "maybe"}, {"force": "yes"},
                                                                         {"force": "2"}, {"force": "tru"}], "c"),
        ("metadata", "GET", "/api/v2/keys/{key}/metadata", _NO, [], "key", [], "c"),
        ("purge", "DELETE", "/api/v2/keys/{gone}/purge", _NO, [], "gone", [], "c"),
        ("restore", "POST", "/api/v2/keys/{gone}/restore", _NO, noisy + [{"payload": 5}, {"payload": "!!!"}],
         "gone", [], "c"),
        ("versions", "GET", "/api/v2/keys/{key}/versions", _NO, [], "key", LIST_Q, "c"),
        ("wrap", "POST", "/api/v2/keys/{key}/actions/wrap", {"plaintext": b64(b"x")}, bare + WRAP_BAD, "key", [], "c"),
        ("unwrap", "POST", "/api/v2/keys/{key}/actions/unwrap", {"ciphertext": ct, "aad": ["a"]}, bare + cb,
         "key", [], "c"),
        ("rewrap", "POST", "/api/v2/keys/{key}/actions/rewrap", {"ciphertext": ct, "aad": ["a"]}, bare + cb,
         "key", [], "c"),
        ("rotate", "POST", "/api/v2/keys/{key}/actions/rotate", _NO,
         noisy + [{"payload": 5}, {"payload": "!!!"}, {"payload": b64(os.urandom(17))}], "key", [], "c"),
        ("setKeyForDeletion", "POST", "/api/v2/keys/{key}/actions/setKeyForDeletion", _NO, noisy, "key", [], "c"),
        ("unsetKeyForDeletion", "POST", "/api/v2/keys/{key}/actions/unsetKeyForDeletion", _NO, noisy, "key", [], "c"),
        ("enable", "POST", "/api/v2/keys/{susp}/actions/enable", _NO, noisy, "susp", [], "c"),
        ("disable", "POST", "/api/v2/keys/{key}/actions/disable", _NO, noisy, "key", [], "c"),
        ("sync", "POST", "/api/v2/keys/{key}/actions/sync", _NO, noisy, "key", [], "c"),
        ("key_policies_put", "PUT", "/api/v2/keys/{key}/policies",
         policy_envelope({"type": POLICY_TYPE, "rotation": {"enabled": True, "interval_month": 5}}),
         full + KPOL_BAD, "key", [{"policy": "bogus"}, {"policy": "rotation,dualAuthDelete"}], "c"),
        ("key_policies_get", "GET", "/api/v2/keys/{key}/policies", _NO, [], "key",
         [{"policy": "bogus"}, {"policy": "x" * 5000}], "c"),
        ("instance_policies_put", "PUT", "/api/v2/instance/policies",
         policy_envelope({"policy_type": "metrics", "policy_data": {"enabled": False}}), full + IPOL_BAD, None,
         [{"policy": "bogus"}, {"policy": "dualAuthDelete"}], "c"),
        ("instance_policies_get", "GET", "/api/v2/instance/policies", _NO, [], None, [{"policy": "bogus"}], "c"),
        ("allowed_ip_port", "GET", "/api/v2/instance/allowed_ip_port", _NO, [], None, [], "c"),
        ("import_token_post", "POST", "/api/v2/import_token", {"expiration": 600}, bare + TOKEN_BAD, None, [], "c"),
        ("import_token_get", "GET", "/api/v2/import_token", _NO, [], None, [], "c"),
        ("registrations_key", "GET", "/api/v2/keys/{key}/registrations", _NO, [], "key", LIST_Q, "c"),
        ("registrations_all", "GET", "/api/v2/keys/registrations", _NO, [], None, LIST_Q, "c"),
        ("alias_create", "POST", "/api/v2/keys/{key}/aliases/{alias}", _NO, [], "alias", [], "c"),  # no body (§6.12)
        ("alias_delete", "DELETE", "/api/v2/keys/{key}/aliases/mal-alias", _NO, [], "key", [], "c"),
        ("rings_list", "GET", "/api/v2/key_rings", _NO, [], None, LIST_Q, "c"),
        ("ring_create", "POST", "/api/v2/key_rings/{ring}", _NO, [], "ring", [], "c"),  # no body (§6.12)
        ("ring_delete", "DELETE", "/api/v2/key_rings/mal-ring", _NO, [], None,
         [{"force": "maybe"}, {"force": "1x"}], "c"),
        ("reg_create", "POST", "/api/v2/keys/{key}/registrations/{crn}", reg_env({"description": "x"}),
         full + REG_BAD, "crn", [], "svc"),
        ("reg_patch", "PATCH", "/api/v2/keys/{key}/registrations/" + crn_path(CRN), reg_env({"description": "x"}),
         full + REG_BAD, "key", [], "svc"),
        ("reg_put", "PUT", "/api/v2/keys/{key}/registrations/" + crn_path(CRN),
         reg_env({"preventKeyDeletion": False, "description": "x", "registrationMetadata": "m"}),
         full + REG_BAD, "key", [], "svc"),
        ("reg_delete", "DELETE", "/api/v2/keys/{key}/registrations/" + crn_path(CRN), _NO, [], "key", [], "svc"),
        ("reg_deactivate", "POST", "/api/v2/keys/{key}/registrations?action=deactivate",
         reg_env({"resourceCrn": CRN}), full + DEACT_BAD, "key", [], "svc"),
    ]
    for a in ("wrap", "unwrap", "rewrap", "rotate", "setKeyForDeletion", "unsetKeyForDeletion", "enable", "disable",
              "restore"):
        tgt = {"enable": "{susp}", "restore": "{gone}"}.get(a, "{key}")
        body = {"wrap": {"plaintext": b64(b"x")}, "unwrap": {"ciphertext": ct, "aad": ["a"]},
                "rewrap": {"ciphertext": ct, "aad": ["a"]}}.get(a, _NO)
        bad = {"wrap": bare + WRAP_BAD, "unwrap": bare + cb, "rewrap": bare + cb}.get(a, noisy)
        slot = tgt.strip("{}")
        E.append((f"action_query_{a}", "POST", f"/api/v2/keys/{tgt}?action={a}", body, bad, slot, [], "c"))
    E.append(("action_query_bogus", "POST", "/api/v2/keys/{key}", {"plaintext": b64(b"x")}, [], "key",
              [{"action": "bogus"}, {"action": ""}, {"action": "wrap,unwrap"}, {"action": "x" * 5000}], "c"))
    return E


ENDPOINT_NAMES = [e[0] for e in endpoints({"root": "r", "ct": b64(b"x"), "all": []})]


def _fill(path, m, slot=None, value=None):
    vals = {"key": m["root"], "gone": m["gone"], "susp": m["susp"], "alias": "mal-new-alias", "ring": "mal-new-ring",
            "crn": crn_path("crn:v1:bluemix:public:cloud-object-storage:global:a/malacct:malinst:bucket:mal2")}
    if slot:
        vals[slot] = value
    out = path
    for k, v in vals.items():
        out = out.replace("{" + k + "}", v)
    return out


@pytest.mark.parametrize("name", ENDPOINT_NAMES)
def test_malformed(mal, name):
    m = mal
    ep = [e for e in endpoints(m) if e[0] == name][0]
    _, method, path, valid, bad_bodies, slot, queries, who = ep
    client = m[who]
    srv = m["srv"]
    before = snapshot(m)
    problems = []

    def send(p, body=_NO, raw=None, headers=None, params=None, expect_4xx=True, **kw):
        # a fresh connection per malformed call (keep-alive reuse after errors is tested in
        # test_api_transport.py::test_connection_reusable_after_early_error)
        headers = dict(headers or {})
        headers.setdefault("Connection", "close")
        try:
            if raw is not None:
                r = client.req(method, p, raw=raw, headers=headers, params=params, **kw)
            else:
                r = client.req(method, p, body, headers=headers, params=params, **kw)
        except requests.RequestException as e:  # connection reset etc.
            if not srv.alive():
                problems.append(f"server died on {method} {p}: {e}")
            return None
        except AssertionError as e:  # a global invariant (5xx, empty 200, bad JSON)
            problems.append(str(e))
            return None
        if r.status_code >= 500:
            problems.append(f"5xx{describe(r, 300)}")
        elif expect_4xx and not 400 <= r.status_code < 500:
            problems.append(f"accepted malformed input{describe(r, 300)}")
        if r.status_code in APP_ERRORS and method != "HEAD":
            try:
                assert_kp_error(r, r.status_code, reasons_optional=r.status_code == 401)
            except AssertionError:
                problems.append(f"error without the KP error envelope{describe(r, 300)}")
        return r

    p0 = _fill(path, m)
    # 1. malformed bodies
    for b in bad_bodies:
        if isinstance(b, bytes):
            send(p0, raw=b, headers={"Content-Type": "application/json"})
        else:
            send(p0, b)
    if bad_bodies and valid is not _NO:
        send(p0, raw=b"{}", headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
             expect_4xx=False)
    # 2. malformed ids
    if slot in ("key", "gone", "susp"):
        for bad in KEY_IDS:
            send(_fill(path, m, slot, bad), valid)
    elif slot == "ring":
        for bad in RING_IDS:
            send(_fill(path, m, slot, bad), valid)
    elif slot == "alias":
        for bad in ALIAS_IDS:
            send(_fill(path, m, slot, bad), valid)
    elif slot == "crn":
        for bad in CRN_IDS:
            send(_fill(path, m, slot, bad), valid)
    # 3. malformed query values (GETs may legitimately answer 200 for some of them)
    for q in queries:
        send(p0, valid, params=q, expect_4xx=method != "GET" and method != "HEAD")
    # 4. malformed auth / instance headers on an otherwise valid request
    for a in BAD_AUTH:
        send(p0, valid, headers={"Authorization": a})
    for inst in BAD_INSTANCE:
        send(p0, valid, headers={"Bluemix-Instance": inst})
    # 5. odd but harmless headers on reads
    if method in ("GET", "HEAD"):
        for h in ({"X-Kms-Key-Ring": "no-such-ring"}, {"X-Kms-Key-Ring": "x" * 5000}, {"X-Kms-Key-Ring": "\xe9"},
                  {"Prefer": "garbage"}, {"Accept": "image/png"}, {"Content-Type": "garbage/garbage"}):
            send(p0, headers=h, expect_4xx=False)
    assert srv.alive(), f"server died; stderr:\n{srv.stderr_tail()}"
    after = snapshot(m)
    changed = [k for k in before if before[k] != after[k]]
    if changed:
        problems.append(f"state changed in {changed}: before={json.dumps({k: before[k] for k in changed})[:1500]} "
                        f"after={json.dumps({k: after[k] for k in changed})[:1500]}")
    assert not problems, f"{len(problems)} problem(s) on {name}:\n" + "\n".join(problems[:15])


NON_UTF8_PATHS = [
    ("GET", "/api/v2/keys/%FF%FE"), ("GET", "/api/v2/keys/%FF/metadata"), ("GET", "/api/v2/keys/%C3%28/versions"),
    ("GET", "/api/v2/keys/%FF/policies"), ("GET", "/api/v2/keys/%FF/registrations"), ("PATCH", "/api/v2/keys/%FF"),
    ("DELETE", "/api/v2/keys/%FF"), ("DELETE", "/api/v2/keys/%FF/purge"), ("POST", "/api/v2/keys/%FF/restore"),
    ("POST", "/api/v2/keys/%FF/actions/wrap"), ("POST", "/api/v2/keys/%FF?action=wrap"),
    ("POST", "/api/v2/keys/%FF/actions/%FF"), ("POST", "/api/v2/keys/{key}/aliases/%FF"),
    ("DELETE", "/api/v2/keys/{key}/aliases/%FF"), ("POST", "/api/v2/key_rings/%FF"), ("DELETE", "/api/v2/key_rings/%FF"),
    ("POST", "/api/v2/keys/{key}/registrations/%FF"), ("PATCH", "/api/v2/keys/{key}/registrations/%FF"),
    ("PUT", "/api/v2/keys/{key}/registrations/%FF"), ("DELETE", "/api/v2/keys/{key}/registrations/%FF"),
]


def test_non_utf8_path_segments(mal):
    """Ids that percent-decode to invalid UTF-8 get a KP-shaped 4xx, like any other bad id."""
    problems = []
    for method, path in NON_UTF8_PATHS:
        client = mal["svc"] if "/registrations/" in path else mal["c"]
        body = {} if method in ("POST", "PUT", "PATCH") else _NO
        r = client.req(method, path.replace("{key}", mal["root"]), body, headers={"Connection": "close"})
        try:
            assert_kp_error(r, (400, 404))
        except AssertionError as e:
            problems.append(str(e).splitlines()[0] + describe(r, 200))
    assert mal["srv"].alive()
    assert not problems, f"{len(problems)} of {len(NON_UTF8_PATHS)}:\n" + "\n".join(problems[:6])


# --- raw HTTP garbage -------------------------------------------------------------------------

RAW = [
    b"GARBAGE\r\n\r\n",
    b"GET /api/v2/keys HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /api/v2/keys HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /api/v2/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":",
    b"POST /api/v2/keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
    b"GET /api/v2/keys HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
    b"GET /api/v2/keys HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n",
    b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/v2/keys HTTP/9.9\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64),  # a TLS hello on the plain port
    b"POST /api/v2/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n{}{}{}",
]


def test_raw_http_garbage(mal):
    srv = mal["srv"]
    host, port = srv.url.split("//")[1].split(":")
    before = snapshot(mal)
    statuses = []
    for payload in RAW:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                data = s.recv(200)
            except OSError:
                data = b""
        statuses.append(data[:12])
        assert not data.startswith(b"HTTP/1.1 5"), (payload[:60], data)
        assert srv.alive(), f"server died on {payload[:60]!r}; stderr:\n{srv.stderr_tail()}"
    check_status(mal["c"].get("/api/v2/keys"), 200)
    assert snapshot(mal) == before
