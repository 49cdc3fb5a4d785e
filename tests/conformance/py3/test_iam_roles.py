"""The real Python client (keyprotect 3.0.1, IAMAuthenticator against our /identity/token)
with non-administrator API keys: a service ID holding Reader and one holding Writer on
the instance can do exactly what their role allows."""

import pytest
import requests

from kh3 import b64, body, create, expect_error, key_body, uniq, unwrap, wrap  # noqa: F401

SR = "crn:v1:bluemix:public:iam::::serviceRole:"


def _iam(server, method, path, body=None):
    r = requests.request(method, server.url + path, json=body, timeout=30,
                         headers={"Authorization": "Bearer " + server.token()})
    assert r.status_code in (200, 201), r.text
    return r.json()


def _service_key_with_role(server, role):
    sid = _iam(server, "POST", "/v1/serviceids", {"name": uniq(role)})["iam_id"]
    _iam(server, "POST", "/v1/policies", {
        "type": "access", "subjects": [{"attributes": [{"name": "iam_id", "value": sid}]}],
        "roles": [{"role_id": SR + role}],
        "resources": [{"attributes": [{"name": "accountId", "value": "dev-account"},
                                      {"name": "serviceName", "value": "kms"},
                                      {"name": "serviceInstance", "value": server.instance}]}]})
    return _iam(server, "POST", "/v1/apikeys", {"name": role, "iam_id": sid})["apikey"]


@pytest.fixture(scope="module")
def reader(server):
    return server.client(_service_key_with_role(server, "Reader"))


@pytest.fixture(scope="module")
def writer(server):
    return server.client(_service_key_with_role(server, "Writer"))


def test_reader_wraps_and_lists_but_cannot_create_or_rotate(kp, reader, inst):
    key = create(kp, inst)
    w = wrap(reader, inst, key["id"], b"0123456789abcdef0123456789abcdef")
    assert unwrap(reader, inst, key["id"], w["ciphertext"])["plaintext"]
    listed = reader.get_keys(bluemix_instance=inst).get_result()
    assert key["id"] in [k["id"] for k in listed["resources"]]
    expect_error(lambda: reader.create_key(bluemix_instance=inst, key_create_body=key_body(uniq())), 401)
    expect_error(lambda: reader.rotate_key(id=key["id"], bluemix_instance=inst), 401)
    expect_error(lambda: reader.disable_key(id=key["id"], bluemix_instance=inst), 401)


def test_writer_creates_and_rotates_but_cannot_delete_or_disable(writer, inst):
    key = create(writer, inst)
    writer.rotate_key(id=key["id"], bluemix_instance=inst)
    w = wrap(writer, inst, key["id"])
    assert unwrap(writer, inst, key["id"], w["ciphertext"])["plaintext"]
    expect_error(lambda: writer.disable_key(id=key["id"], bluemix_instance=inst), 401)
    expect_error(lambda: writer.delete_key(id=key["id"], bluemix_instance=inst), 401)
    expect_error(lambda: writer.purge_key(id=key["id"], bluemix_instance=inst), 401)
