"""§5 rows 27–28, §6.2 secure import, §6.9 import tokens."""
import os
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from api_helpers import JSON_CT, RFC3339, assert_kp_error, b64, check_status, describe, secure_import_fields, unb64


@pytest.fixture(scope="module")
def ic(server_factory):
    """Own server: there is one import token per instance."""
    return server_factory().client()


def _parse(ts):
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def new_token(c, expiration=600, retrievals=1, body=None):
    b = {"expiration": expiration, "maxAllowedRetrievals": retrievals} if body is None else body
    r = c.post("/api/v2/import_token", b)
    check_status(r, 200, 201)
    return r.json()


def fetch_token(c):
    r = c.get("/api/v2/import_token")
    check_status(r, 200)
    return r.json()


def oaep():
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def secure_fields(tok, material, nonce=None, iv=None):
    return secure_import_fields(tok, material, nonce, iv)


def test_post_import_token(ic):
    t = new_token(ic, 600, 2)
    assert t["maxAllowedRetrievals"] == 2
    assert t["remainingRetrievals"] == 2
    assert RFC3339.match(t["creationDate"]) and RFC3339.match(t["expirationDate"])
    assert abs((_parse(t["expirationDate"]) - _parse(t["creationDate"])).total_seconds() - 600) <= 1
    assert "payload" not in t and "nonce" not in t


def test_post_import_token_defaults(ic):
    r = ic.post("/api/v2/import_token", {})
    check_status(r, 200, 201)
    t = r.json()
    assert t["maxAllowedRetrievals"] == 1 and t["remainingRetrievals"] == 1
    assert abs((_parse(t["expirationDate"]) - _parse(t["creationDate"])).total_seconds() - 600) <= 1


def test_import_token_content_type(ic):
    r = ic.post("/api/v2/import_token", {"expiration": 300})
    check_status(r, 200, 201)
    assert JSON_CT.match(r.headers["content-type"]), describe(r)
    g = ic.get("/api/v2/import_token")
    assert JSON_CT.match(g.headers["content-type"]), describe(g)


@pytest.mark.parametrize("body", [{"expiration": 299}, {"expiration": 86401}, {"expiration": -5},
                                  {"expiration": "600"}, {"maxAllowedRetrievals": 0},
                                  {"maxAllowedRetrievals": 501}, {"maxAllowedRetrievals": -1},
                                  {"maxAllowedRetrievals": "x"}, [], "x"])
def test_post_import_token_invalid(ic, body):
    assert_kp_error(ic.post("/api/v2/import_token", body), 400)


def test_get_import_token_and_retrieval_count(ic):
    new_token(ic, 600, 2)
    g1 = fetch_token(ic)
    assert g1["remainingRetrievals"] == 1 and g1["maxAllowedRetrievals"] == 2
    pem = unb64(g1["payload"])
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----"), pem[:40]
    pub = serialization.load_pem_public_key(pem)
    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 4096
    assert len(unb64(g1["nonce"])) == 12
    g2 = fetch_token(ic)
    assert g2["remainingRetrievals"] == 0
    assert g2["nonce"] == g1["nonce"] and g2["payload"] == g1["payload"]
    # retrievals exhausted
    assert_kp_error(ic.get("/api/v2/import_token"), 409, "IMPORT_TOKEN_EXPIRED_ERR")


def test_get_import_token_none_created(server_factory):
    c = server_factory().client()
    r = c.get("/api/v2/import_token")
    assert_kp_error(r, (404, 409))


def test_new_post_replaces_token(ic):
    new_token(ic, 600, 1)
    a = fetch_token(ic)
    new_token(ic, 600, 1)
    b = fetch_token(ic)
    assert a["nonce"] != b["nonce"] or a["payload"] != b["payload"]


def test_secure_import(ic):
    _secure_import(ic)


def _secure_import(ic):
    new_token(ic, 600, 1)
    tok = fetch_token(ic)
    material = os.urandom(32)
    r = ic.create_key_resp(extractable=False, **secure_fields(tok, material))
    check_status(r, 201)
    k = r.json()["resources"][0]
    assert k["imported"] is True and k["extractable"] is False and "payload" not in k
    w = ic.wrap(k["id"], b"securely imported")
    assert unb64(ic.unwrap(k["id"], w["ciphertext"])["plaintext"]) == b"securely imported"
    return k, material


@pytest.mark.parametrize("size", [16, 24])
def test_secure_import_other_sizes(ic, size):
    new_token(ic, 600, 1)
    tok = fetch_token(ic)
    check_status(ic.create_key_resp(extractable=False, **secure_fields(tok, os.urandom(size))), 201)


def test_secure_import_wrong_nonce(ic):
    new_token(ic, 600, 1)
    tok = fetch_token(ic)
    r = ic.create_key_resp(extractable=False, **secure_fields(tok, os.urandom(32), nonce=os.urandom(12)))
    assert_kp_error(r, 400, "INCORRECT_NONCE_ERR")


def test_secure_import_wrong_iv(ic):
    new_token(ic, 600, 1)
    tok = fetch_token(ic)
    f = secure_fields(tok, os.urandom(32))
    f["iv"] = b64(os.urandom(12))
    assert_kp_error(ic.create_key_resp(extractable=False, **f), 400, ("INCORRECT_NONCE_ERR", "INCORRECT_NONCE_IV_ERR"))


def test_secure_import_missing_iv_or_nonce(ic):
    new_token(ic, 600, 1)
    tok = fetch_token(ic)
    for drop in ("iv", "encryptedNonce"):
        f = secure_fields(tok, os.urandom(32))
        del f[drop]
        assert_kp_error(ic.create_key_resp(extractable=False, **f), 400)


def test_secure_import_payload_not_rsa_encrypted(ic):
    new_token(ic, 600, 1)
    tok = fetch_token(ic)
    f = secure_fields(tok, os.urandom(32))
    f["payload"] = b64(os.urandom(512))
    assert_kp_error(ic.create_key_resp(extractable=False, **f), 400)


def test_secure_import_wrong_algorithm(ic):
    new_token(ic, 600, 1)
    tok = fetch_token(ic)
    f = secure_fields(tok, os.urandom(32))
    f["encryptionAlgorithm"] = "ROT13"
    assert_kp_error(ic.create_key_resp(extractable=False, **f), 400)


def test_secure_import_with_replaced_token_refused(ic):
    new_token(ic, 600, 1)
    old = fetch_token(ic)
    new_token(ic, 600, 1)
    r = ic.create_key_resp(extractable=False, **secure_fields(old, os.urandom(32)))
    assert_kp_error(r, (400, 409), ("INCORRECT_NONCE_ERR", "IMPORT_TOKEN_EXPIRED_ERR", "BAD_BODY_ERR",
                                    "INVALID_FIELD_ERR"))


def test_secure_import_without_any_token(server_factory):
    c = server_factory().client()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake = {"payload": b64(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)),
            "nonce": b64(os.urandom(12))}
    r = c.create_key_resp(extractable=False, **secure_fields(fake, os.urandom(32)))
    assert_kp_error(r, (400, 404, 409))


def test_secure_import_token_used_up(ic):
    """A token serves one import; importing again with the same nonce is refused."""
    new_token(ic, 600, 1)
    tok = fetch_token(ic)
    check_status(ic.create_key_resp(extractable=False, **secure_fields(tok, os.urandom(32))), 201)
    r = ic.create_key_resp(extractable=False, **secure_fields(tok, os.urandom(32)))
    assert r.status_code in (201, 409), describe(r)
    if r.status_code == 409:
        assert_kp_error(r, 409, "IMPORT_TOKEN_EXPIRED_ERR")


def test_rotate_securely_imported_key(ic):
    k, material = _secure_import(ic)
    old = ic.wrap(k["id"], b"v1 dek")
    # rotation without payload is refused for imported keys
    assert_kp_error(ic.action(k["id"], "rotate"), 400, "KEY_PAYLOAD_REQ_ERR")
    new_token(ic, 600, 1)
    tok = fetch_token(ic)
    new_material = os.urandom(32)
    r = ic.action(k["id"], "rotate", secure_fields(tok, new_material))
    check_status(r, 204)
    assert len(ic.versions(k["id"])) == 2
    assert unb64(ic.unwrap(k["id"], old["ciphertext"])["plaintext"]) == b"v1 dek"
    w = ic.wrap(k["id"], b"v2 dek")
    assert w["keyVersion"]["id"] != old["keyVersion"]["id"]
    assert unb64(ic.unwrap(k["id"], w["ciphertext"])["plaintext"]) == b"v2 dek"


def test_rotate_securely_imported_key_wrong_nonce(ic):
    k, _ = _secure_import(ic)
    new_token(ic, 600, 1)
    tok = fetch_token(ic)
    r = ic.action(k["id"], "rotate", secure_fields(tok, os.urandom(32), nonce=os.urandom(12)))
    assert_kp_error(r, 400, "INCORRECT_NONCE_ERR")
    assert len(ic.versions(k["id"])) == 1


def test_rotate_with_doc_example_extra_fields(ic):
    """KPDOCS rotate example also sends type/name/description/extractable: ignore them."""
    material = os.urandom(32)
    k = check_status(ic.create_key_resp(payload=b64(material)), 201).json()["resources"][0]
    body = {"type": "application/vnd.ibm.kms.key+json", "name": "whatever", "description": "x",
            "extractable": False, "payload": b64(os.urandom(32))}
    check_status(ic.action(k["id"], "rotate", body), 204)
    assert ic.metadata(k["id"])["name"] == k["name"]
