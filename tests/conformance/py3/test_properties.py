"""Property-based round trips through the SDK (hypothesis; bounded example counts, local server)."""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kh3 import create, unb64, unwrap, wrap

AAD = st.lists(st.text(alphabet=string.ascii_letters + string.digits + " -_./:", min_size=1, max_size=255),
               max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dek=st.binary(min_size=1, max_size=512), aad=AAD)
def test_wrap_unwrap_any_bytes_and_aad(kp, inst, dek, aad):
    k = _key(kp, inst)
    w = wrap(kp, inst, k, dek, aad=aad or None)
    assert unb64(unwrap(kp, inst, k, w["ciphertext"], aad=aad or None)["plaintext"]) == dek


_KEY = {}


def _key(kp, inst):
    if "id" not in _KEY:
        _KEY["id"] = create(kp, inst)["id"]
    return _KEY["id"]
