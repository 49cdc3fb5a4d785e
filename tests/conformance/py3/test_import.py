"""Import tokens and secure import (§5 rows 27, 28; §6.2, §6.9)."""

import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from ibm_cloud_sdk_core import ApiException

from kh3 import J, b64, create, describe, expect_error, key_body, secure_import_fields, uniq, unb64, unwrap, wrap


def _post_token(kp, inst, **kw):
    res = kp.post_import_token(bluemix_instance=inst, **kw)
    assert res.get_status_code() in (200, 201)
    return J(res)


def _get_token(kp, inst):
    res = kp.get_import_token(bluemix_instance=inst)
    assert res.get_status_code() == 200
    return J(res)


def test_import_token_create_and_get(fresh_server):
    kp, inst = fresh_server.client(), fresh_server.instance
    t = _post_token(kp, inst, expiration=900, max_allowed_retrievals=3)
    assert t["maxAllowedRetrievals"] == 3
    assert t["remainingRetrievals"] == 3
    assert t["creationDate"].endswith("Z") and t["expirationDate"].endswith("Z")
    assert "payload" not in t and "nonce" not in t

    g = _get_token(kp, inst)
    assert g["remainingRetrievals"] == 2
    assert g["maxAllowedRetrievals"] == 3
    assert g["creationDate"] == t["creationDate"] and g["expirationDate"] == t["expirationDate"]
    pem = base64.b64decode(g["payload"])
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----"), pem[:40]
    pub = serialization.load_pem_public_key(pem)
    assert pub.key_size == 4096
    assert len(base64.b64decode(g["nonce"])) == 12
    assert _get_token(kp, inst)["remainingRetrievals"] == 1
    assert _get_token(kp, inst)["remainingRetrievals"] == 0
    # Retrievals exhausted -> GET no longer hands out the token.
    try:
        res = kp.get_import_token(bluemix_instance=inst)
    except ApiException as e:
        assert 400 <= e.code < 500, describe(e)
    else:
        pytest.fail(f"GET import_token after 3/3 retrievals succeeded: {J(res)}")


def test_import_token_defaults(fresh_server):
    kp, inst = fresh_server.client(), fresh_server.instance
    t = _post_token(kp, inst)
    assert t["maxAllowedRetrievals"] == 1 and t["remainingRetrievals"] == 1


def test_import_token_get_without_post(fresh_server):
    kp, inst = fresh_server.client(), fresh_server.instance
    try:
        kp.get_import_token(bluemix_instance=inst)
    except ApiException as e:
        assert e.code in (404, 409), describe(e)
    else:
        pytest.fail("GET import_token without a token succeeded")


@pytest.mark.parametrize("kw", [{"expiration": 10}, {"expiration": 86401}, {"max_allowed_retrievals": 501},
                                {"max_allowed_retrievals": 0}])
def test_import_token_bad_params(kp, inst, kw):
    expect_error(lambda: kp.post_import_token(bluemix_instance=inst, **kw), 400)


@pytest.mark.parametrize("size", [16, 24, 32])
def test_secure_import(fresh_server, size):
    kp, inst = fresh_server.client(), fresh_server.instance
    _post_token(kp, inst, expiration=600, max_allowed_retrievals=2)
    tok = _get_token(kp, inst)
    material = os.urandom(size)
    k = create(kp, inst, name=uniq("secimp"), **secure_import_fields(tok, material))
    assert k["imported"] is True and k["extractable"] is False and k["state"] == 1
    dek = os.urandom(32)
    w = wrap(kp, inst, k["id"], dek)
    assert unb64(unwrap(kp, inst, k["id"], w["ciphertext"])["plaintext"]) == dek


def test_secure_import_wrong_nonce(fresh_server):
    kp, inst = fresh_server.client(), fresh_server.instance
    _post_token(kp, inst, max_allowed_retrievals=2)
    tok = _get_token(kp, inst)
    bad = dict(tok, nonce=b64(os.urandom(12)))
    expect_error(lambda: kp.create_key(bluemix_instance=inst,
                                       key_create_body=key_body(uniq(), **secure_import_fields(bad, os.urandom(32)))),
                 400, "INCORRECT_NONCE_ERR")


def test_secure_import_wrong_iv(fresh_server):
    kp, inst = fresh_server.client(), fresh_server.instance
    _post_token(kp, inst, max_allowed_retrievals=2)
    tok = _get_token(kp, inst)
    f = secure_import_fields(tok, os.urandom(32))
    f["iv"] = b64(os.urandom(12))
    e = expect_error(lambda: kp.create_key(bluemix_instance=inst, key_create_body=key_body(uniq(), **f)), 400)
    from kh3 import error_of
    assert error_of(e)[1] in ("INCORRECT_NONCE_ERR", "INCORRECT_NONCE_IV_ERR"), describe(e)


def test_secure_import_nonce_without_iv(fresh_server):
    kp, inst = fresh_server.client(), fresh_server.instance
    _post_token(kp, inst, max_allowed_retrievals=2)
    tok = _get_token(kp, inst)
    f = secure_import_fields(tok, os.urandom(32))
    del f["iv"]
    expect_error(lambda: kp.create_key(bluemix_instance=inst, key_create_body=key_body(uniq(), **f)), 400)


def test_secure_import_payload_not_for_token_key(fresh_server):
    """Payload encrypted to a different RSA key cannot be decrypted by the server."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    kp, inst = fresh_server.client(), fresh_server.instance
    _post_token(kp, inst, max_allowed_retrievals=2)
    tok = _get_token(kp, inst)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    fake = dict(tok, payload=b64(other.public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)))
    f = secure_import_fields(fake, os.urandom(32))
    try:
        kp.create_key(bluemix_instance=inst, key_create_body=key_body(uniq(), **f))
    except ApiException as e:
        assert e.code == 400, describe(e)
    else:
        pytest.fail("key material encrypted to a foreign RSA key was accepted")


def test_rotate_secure_imported_key_with_secure_payload(fresh_server):
    kp, inst = fresh_server.client(), fresh_server.instance
    _post_token(kp, inst, max_allowed_retrievals=3)
    k = create(kp, inst, **secure_import_fields(_get_token(kp, inst), os.urandom(32)))
    old = wrap(kp, inst, k["id"], b"before secure rotate")
    from kh3 import body
    expect_error(lambda: kp.rotate_key(id=k["id"], bluemix_instance=inst), 400, "KEY_PAYLOAD_REQ_ERR")
    res = kp.rotate_key(id=k["id"], bluemix_instance=inst,
                        key_action_rotate_body=body(secure_import_fields(_get_token(kp, inst), os.urandom(32))))
    assert res.get_status_code() == 204
    u = unwrap(kp, inst, k["id"], old["ciphertext"])
    assert unb64(u["plaintext"]) == b"before secure rotate"
    assert "rewrappedKeyVersion" in u
    w = wrap(kp, inst, k["id"], b"after")
    assert unb64(unwrap(kp, inst, k["id"], w["ciphertext"])["plaintext"]) == b"after"
