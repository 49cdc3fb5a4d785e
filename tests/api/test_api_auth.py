"""§2 IAM token endpoints and §2.1/§3 request authentication."""
import json
import time
import uuid

import pytest
import requests

from api_helpers import (APIKEY_GRANT, JSON_CT, assert_kp_error, b64url_decode, b64url_encode,
                         check_status, describe)


def _token_resp(server, path, data, headers=None):
    return requests.post(server.iam_url + path, data=data, headers=headers or {}, timeout=30)


def _assert_token_body(r, server=None):
    check_status(r, 200)
    assert JSON_CT.match(r.headers.get("content-type", "")), describe(r)
    body = r.json()
    for f in ("access_token", "refresh_token", "token_type", "expires_in", "expiration"):
        assert f in body, f"token response lacks {f}{describe(r)}"
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert isinstance(body["expiration"], int)
    now = int(time.time())
    assert abs(body["expiration"] - (now + body["expires_in"])) <= 5
    assert isinstance(body["refresh_token"], str) and body["refresh_token"]
    parts = body["access_token"].split(".")
    assert len(parts) == 3, "access_token must be a 3-part JWT"
    header = json.loads(b64url_decode(parts[0]))
    payload = json.loads(b64url_decode(parts[1]))
    assert "alg" in header
    assert isinstance(payload.get("iat"), int) and isinstance(payload.get("exp"), int)
    assert payload["exp"] > payload["iat"]
    assert abs(payload["iat"] - now) <= 5
    assert abs(payload["exp"] - body["expiration"]) <= 2
    return body


@pytest.mark.parametrize("path", ["/identity/token", "/oidc/token"])
def test_token_apikey_grant(server, path):
    r = _token_resp(server, path, {"grant_type": APIKEY_GRANT, "apikey": server.apikey},
                    {"Accept": "application/json"})
    body = _assert_token_body(r)
    # the token works on the KMS API
    kr = requests.get(server.url + "/api/v2/keys", timeout=30,
                      headers={"Authorization": "Bearer " + body["access_token"],
                               "Bluemix-Instance": server.instance_id})
    check_status(kr, 200)


def test_token_python_sdk_form(server):
    # PY3/NODE also send response_type=cloud_iam (§2.2)
    r = _token_resp(server, "/identity/token",
                    {"grant_type": APIKEY_GRANT, "apikey": server.apikey, "response_type": "cloud_iam"},
                    {"Accept": "application/json"})
    _assert_token_body(r)


def test_oidc_token_redstone_form_and_refresh(server):
    # PY2 (redstone): Basic bx:bx, uaa_client_id=cf, then refresh_token grant (§2.2)
    hdrs = {"Authorization": "Basic Yng6Yng=", "Accept": "application/json"}
    r = _token_resp(server, "/oidc/token",
                    {"response_type": "cloud_iam", "uaa_client_id": "cf", "uaa_client_secret": "",
                     "grant_type": APIKEY_GRANT, "apikey": server.apikey}, hdrs)
    body = _assert_token_body(r)
    r2 = _token_resp(server, "/oidc/token",
                     {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                      "response_type": "cloud_iam", "uaa_client_id": "cf", "uaa_client_secret": ""}, hdrs)
    body2 = _assert_token_body(r2)
    kr = requests.get(server.url + "/api/v2/keys", timeout=30,
                      headers={"Authorization": "Bearer " + body2["access_token"],
                               "Bluemix-Instance": server.instance_id})
    check_status(kr, 200)


def test_oidc_bad_refresh_token(server):
    r = _token_resp(server, "/oidc/token", {"grant_type": "refresh_token", "refresh_token": "nope"})
    _assert_iam_error(r)


def _assert_iam_error(r):
    assert r.status_code == 400, f"expected 400{describe(r)}"
    body = r.json()
    assert isinstance(body.get("errorCode"), str) and body["errorCode"], describe(r)
    assert isinstance(body.get("errorMessage"), str) and body["errorMessage"], describe(r)


@pytest.mark.parametrize("path", ["/identity/token", "/oidc/token"])
def test_bad_apikey(server, path):
    _assert_iam_error(_token_resp(server, path, {"grant_type": APIKEY_GRANT, "apikey": "not-a-key"}))


@pytest.mark.parametrize("path", ["/identity/token", "/oidc/token"])
@pytest.mark.parametrize("form", [{}, {"grant_type": APIKEY_GRANT},
                                  {"grant_type": "password", "apikey": "x"}, {"apikey": "x"}])
def test_token_request_malformed(server, path, form):
    r = _token_resp(server, path, form)
    _assert_iam_error(r)


def test_all_three_principals_get_tokens(server):
    toks = {server.token(k) for k in (server.apikey, server.second_apikey, server.service_apikey)}
    assert len(toks) == 3
    assert len({server.apikey, server.second_apikey, server.service_apikey}) == 3


def test_second_admin_is_a_different_principal_with_access(server):
    t1, t2 = server.token(server.apikey), server.token(server.second_apikey)
    sub1 = json.loads(b64url_decode(t1.split(".")[1])).get("sub")
    sub2 = json.loads(b64url_decode(t2.split(".")[1])).get("sub")
    if sub1 is not None and sub2 is not None:
        assert sub1 != sub2
    check_status(server.client(server.second_apikey).get("/api/v2/keys"), 200)


# --- KMS-side authentication (§2.1, §3) -------------------------------------------------

def _kms(server, headers):
    return requests.get(server.url + "/api/v2/keys", headers=headers, timeout=30)


def test_no_token_401(server):
    r = _kms(server, {"Bluemix-Instance": server.instance_id})
    assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)


@pytest.mark.parametrize("auth", ["Bearer garbage", "Bearer ", "Bearer a.b.c", "Basic Yng6Yng=",
                                  "garbage", "Bearer " + "A" * 5000])
def test_bad_token_401(server, auth):
    r = _kms(server, {"Bluemix-Instance": server.instance_id, "Authorization": auth})
    assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)


def test_bearer_scheme_case_insensitive(server):
    tok = server.token()
    for scheme in ("bearer", "BEARER"):
        r = _kms(server, {"Bluemix-Instance": server.instance_id, "Authorization": f"{scheme} {tok}"})
        check_status(r, 200)


def _tamper_payload(tok, **changes):
    h, p, s = tok.split(".")
    payload = json.loads(b64url_decode(p))
    payload.update(changes)
    return ".".join([h, b64url_encode(json.dumps(payload).encode()), s])


def test_tampered_token_401(server):
    tok = server.token()
    h, p, s = tok.split(".")
    variants = [
        _tamper_payload(tok, exp=int(time.time()) + 10 ** 6),
        _tamper_payload(tok, sub="someone-else"),
        ".".join([h, p, s[:-2] + ("AA" if not s.endswith("AA") else "BB")]),
        ".".join([h, p, ""]),
        # alg=none with the same payload
        ".".join([b64url_encode(b'{"alg":"none","typ":"JWT"}'), p, ""]),
        ".".join([b64url_encode(b'{"alg":"HS256","typ":"JWT"}'), p, s]),
    ]
    for bad in variants:
        r = _kms(server, {"Bluemix-Instance": server.instance_id, "Authorization": "Bearer " + bad})
        assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)


def test_token_from_another_server_401(server, server_factory):
    other = server_factory()
    r = _kms(server, {"Bluemix-Instance": server.instance_id,
                      "Authorization": "Bearer " + other.token()})
    assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)


def test_expired_token_401(server_factory):
    srv = server_factory(extra=["--token-lifetime", "3"])
    tok = srv.token()
    ok = _kms(srv, {"Bluemix-Instance": srv.instance_id, "Authorization": "Bearer " + tok})
    check_status(ok, 200)
    time.sleep(4.5)
    r = _kms(srv, {"Bluemix-Instance": srv.instance_id, "Authorization": "Bearer " + tok})
    assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)


def test_missing_instance_400(server):
    r = _kms(server, {"Authorization": "Bearer " + server.token()})
    assert_kp_error(r, 400)


def test_unknown_instance_401(server):
    r = _kms(server, {"Authorization": "Bearer " + server.token(),
                      "Bluemix-Instance": str(uuid.uuid4())})
    assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)


@pytest.mark.parametrize("inst", ["not-a-uuid", "", "x" * 4000])
def test_malformed_instance_4xx(server, inst):
    r = _kms(server, {"Authorization": "Bearer " + server.token(), "Bluemix-Instance": inst})
    assert_kp_error(r, (400, 401))


def test_instance_header_case_insensitive(server):
    r = _kms(server, {"authorization": "Bearer " + server.token(), "bluemix-instance": server.instance_id})
    check_status(r, 200)


def test_401_on_every_kind_of_endpoint(server):
    kid = str(uuid.uuid4())
    for method, path in [("HEAD", "/api/v2/keys"), ("POST", "/api/v2/keys"),
                         ("POST", "/api/v2/keys_with_policy_overrides"),
                         ("GET", f"/api/v2/keys/{kid}"), ("DELETE", f"/api/v2/keys/{kid}"),
                         ("POST", f"/api/v2/keys/{kid}/actions/wrap"),
                         ("POST", f"/api/v2/keys/{kid}?action=wrap"),
                         ("GET", "/api/v2/instance/policies"), ("GET", "/api/v2/import_token"),
                         ("GET", "/api/v2/key_rings"), ("GET", "/api/v2/keys/registrations"),
                         ("POST", f"/api/v2/keys/{kid}/aliases/abc")]:
        r = requests.request(method, server.url + path, headers={"Bluemix-Instance": server.instance_id},
                             timeout=30)
        assert r.status_code == 401, f"{method} {path}{describe(r)}"
        if method != "HEAD":
            assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)


def test_refresh_token_is_not_a_bearer_token(server):
    body = _token_resp(server, "/oidc/token", {"grant_type": APIKEY_GRANT, "apikey": server.apikey}).json()
    r = _kms(server, {"Bluemix-Instance": server.instance_id, "Authorization": "Bearer " + body["refresh_token"]})
    assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)


def test_access_token_is_not_a_refresh_token(server):
    body = _token_resp(server, "/oidc/token", {"grant_type": APIKEY_GRANT, "apikey": server.apikey}).json()
    _assert_iam_error(_token_resp(server, "/oidc/token", {"grant_type": "refresh_token",
                                                          "refresh_token": body["access_token"]}))


@pytest.mark.parametrize("path", ["/identity/token", "/oidc/token"])
def test_token_endpoint_odd_requests(server, path):
    url = server.iam_url + path
    r = requests.post(url, json={"grant_type": APIKEY_GRANT, "apikey": server.apikey}, timeout=30)
    assert 400 <= r.status_code < 500 or r.status_code == 200, describe(r)
    r = requests.post(url, data=b"grant_type=" + b"%" * 10, timeout=30,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert 400 <= r.status_code < 500, describe(r)
    r = requests.get(url, timeout=30)
    assert r.status_code in (400, 404, 405), describe(r)
    for key in (" " + server.apikey, server.apikey + "\n", server.apikey.upper(), server.apikey[:-1]):
        _assert_iam_error(_token_resp(server, path, {"grant_type": APIKEY_GRANT, "apikey": key}))


@pytest.mark.parametrize("ct", ["application/x-www-form-urlencoded; charset=UTF-8",
                                "application/x-www-form-urlencoded;charset=utf-8",
                                "Application/X-WWW-Form-Urlencoded"])
def test_token_form_content_type_variants(server, ct):
    from urllib.parse import urlencode
    body = urlencode({"grant_type": APIKEY_GRANT, "apikey": server.apikey, "response_type": "cloud_iam"})
    r = requests.post(server.iam_url + "/identity/token", data=body, headers={"Content-Type": ct}, timeout=30)
    _assert_token_body(r)
