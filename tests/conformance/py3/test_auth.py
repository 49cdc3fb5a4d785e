"""IAM token endpoint and KMS authentication, as the py3 SDK (and raw HTTP) sees them."""

import base64
import json
import time

import requests

from kh3 import J, expect_error, key_body, uniq


def _jwt_claims(tok):
    parts = tok.split(".")
    assert len(parts) == 3, f"access_token is not a 3-segment JWT: {tok[:40]}"
    pad = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(pad))


def test_identity_token_shape(server):
    r = requests.post(
        server.iam_url + "/identity/token",
        data={
            "grant_type": "urn:ibm:params:oauth:grant-type:apikey",
            "apikey": server.info["apikey"],
            "response_type": "cloud_iam",
        },
        headers={"Accept": "application/json"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert doc["token_type"] == "Bearer"
    assert isinstance(doc["expires_in"], int) and doc["expires_in"] > 0
    assert isinstance(doc["expiration"], int) and doc["expiration"] > time.time()
    assert doc.get("refresh_token")
    claims = _jwt_claims(doc["access_token"])
    assert claims["exp"] > claims["iat"]
    assert abs(claims["exp"] - doc["expiration"]) <= 1


def test_identity_token_bad_apikey(server):
    r = requests.post(
        server.iam_url + "/identity/token",
        data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "not-a-key", "response_type": "cloud_iam"},
        timeout=30,
    )
    assert r.status_code >= 400 and r.status_code != 404 and r.status_code < 500, (r.status_code, r.text)
    assert "errorCode" in r.json(), r.text


def test_sdk_iam_authenticator_works(kp, inst):
    # The IAMAuthenticator must accept the JWT (PYCORE decodes it) and the call succeed.
    res = kp.get_keys(bluemix_instance=inst)
    assert res.get_status_code() == 200
    doc = J(res)
    assert doc["metadata"]["collectionType"] == "application/vnd.ibm.kms.key+json"
    assert isinstance(doc["resources"], list)


def test_bad_bearer_is_401(server):
    r = requests.get(
        server.url + "/api/v2/keys",
        headers={"Authorization": "Bearer not.a.token", "Bluemix-Instance": server.instance},
        timeout=30,
    )
    assert r.status_code == 401, r.text
    doc = r.json()
    assert doc["metadata"]["collectionType"] == "application/vnd.ibm.kms.error+json"
    assert doc["resources"][0]["errorMsg"].startswith("Unauthorized")


def test_missing_bearer_is_401(server):
    r = requests.get(server.url + "/api/v2/keys", headers={"Bluemix-Instance": server.instance}, timeout=30)
    assert r.status_code == 401, r.text


def test_missing_bluemix_instance_is_400(server):
    r = requests.get(server.url + "/api/v2/keys", headers={"Authorization": "Bearer " + server.token()}, timeout=30)
    assert r.status_code == 400, r.text


def test_lowercase_bearer_scheme_accepted(server):
    r = requests.get(
        server.url + "/api/v2/keys",
        headers={"Authorization": "bearer " + server.token(), "Bluemix-Instance": server.instance},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_wrong_instance_rejected(server):
    # A token for this instance must not open another instance id.
    r = requests.get(
        server.url + "/api/v2/keys",
        headers={"Authorization": "Bearer " + server.token(), "Bluemix-Instance": "00000000-0000-4000-8000-000000000000"},
        timeout=30,
    )
    assert r.status_code in (401, 403, 404), r.text


def test_second_admin_is_a_working_admin(kp2, inst):
    res = kp2.create_key(bluemix_instance=inst, key_create_body=key_body(uniq("second")))
    assert res.get_status_code() == 201
    k = J(res)["resources"][0]
    assert k["state"] == 1


def test_new_instance_from_environment(server, monkeypatch):
    """§9.1: IbmKeyProtectApiV2.new_instance() configured through IBM_KEY_PROTECT_API_* variables."""
    from keyprotect.ibm_key_protect_api_v2 import IbmKeyProtectApiV2
    monkeypatch.setenv("IBM_KEY_PROTECT_API_URL", server.url)
    monkeypatch.setenv("IBM_KEY_PROTECT_API_AUTH_TYPE", "iam")
    monkeypatch.setenv("IBM_KEY_PROTECT_API_APIKEY", server.info["apikey"])
    monkeypatch.setenv("IBM_KEY_PROTECT_API_AUTH_URL", server.iam_url)
    kp = IbmKeyProtectApiV2.new_instance()
    k = J(kp.create_key(bluemix_instance=server.instance, key_create_body=key_body(uniq("env"))))["resources"][0]
    assert J(kp.get_key(id=k["id"], bluemix_instance=server.instance))["resources"][0]["id"] == k["id"]


def test_bearer_token_authenticator_and_trailing_slash(server):
    from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator
    from keyprotect.ibm_key_protect_api_v2 import IbmKeyProtectApiV2
    kp = IbmKeyProtectApiV2(authenticator=BearerTokenAuthenticator(bearer_token=server.token()))
    kp.set_service_url(server.url + "/")
    res = kp.get_keys(bluemix_instance=server.instance)
    assert res.get_status_code() == 200


def test_iam_url_with_identity_token_suffix(server):
    """PYCORE trims a url already ending in /identity/token."""
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
    from keyprotect.ibm_key_protect_api_v2 import IbmKeyProtectApiV2
    kp = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(apikey=server.info["apikey"],
                                                           url=server.iam_url + "/identity/token"))
    kp.set_service_url(server.url)
    assert kp.get_keys(bluemix_instance=server.instance).get_status_code() == 200
