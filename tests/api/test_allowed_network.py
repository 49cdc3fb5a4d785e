"""The allowedNetwork instance policy takes effect: with `serve --private-listen`, a
private-only instance answers on the private listener only (403 PRIVATE_NETWORK_ONLY_ERR
on the public one), and connection info names the private endpoint."""
import pytest

from api_helpers import POLICY_TYPE, assert_kp_error, check_status, policy_envelope
from rc_helpers import hs_crypto, rc


def network_policy(value):
    return policy_envelope({"policy_type": "allowedNetwork",
                            "policy_data": {"enabled": True, "attributes": {"allowed_network": value}}})


@pytest.fixture(scope="module")
def two_listeners(server_factory):
    return server_factory(extra=["--private-listen", "127.0.0.1:0", "--public-host", "kms.example.test:8443"])


def test_private_only_instance_answers_on_the_private_listener(two_listeners):
    srv = two_listeners
    c = srv.client()
    hs = hs_crypto(c)
    info = check_status(rc(c, "GET", f"/crypto_v2/instances/{hs['guid']}"), 200).json()
    assert info["kms"]["public"] == "kms.example.test:8443"
    private = info["kms"]["private"]
    assert private.startswith("127.0.0.1:") and private != srv.url.split("://")[1]
    private_url = "http://" + private

    # Both listeners serve the instance while the policy allows both networks.
    check_status(c.get("/api/v2/keys"), 200)
    check_status(c.get(private_url + "/api/v2/keys"), 200)

    check_status(c.put("/api/v2/instance/policies", network_policy("private-only"),
                       params={"policy": "allowedNetwork"}), 204)
    r = c.get("/api/v2/keys")
    res = assert_kp_error(r, 403, "PRIVATE_NETWORK_ONLY_ERR")
    assert "private" in res["reasons"][0]["message"]
    assert_kp_error(c.post("/api/v2/keys", {"x": 1}), 403, "PRIVATE_NETWORK_ONLY_ERR")
    check_status(c.get(private_url + "/api/v2/keys"), 200)
    key = c.root_key(path=private_url + "/api/v2/keys")
    assert_kp_error(c.wrap_resp(key["id"], b"k" * 32), 403, "PRIVATE_NETWORK_ONLY_ERR")
    # The resource controller is account-level, not the instance's: still public.
    check_status(rc(c, "GET", "/v2/resource_instances"), 200)

    # Back to both networks (set through the private endpoint): the public one serves again.
    check_status(c.put(private_url + "/api/v2/instance/policies", network_policy("public-and-private"),
                       params={"policy": "allowedNetwork"}), 204)
    check_status(c.get("/api/v2/keys"), 200)
