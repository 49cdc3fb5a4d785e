"""Fixtures for the Keyhold API suite (real HTTP against a started `keyhold serve --dev`).

- `server`: one session-wide server with fast timing rules (rotate/cooldown/purge = 0).
- `server_factory(fast=True, extra=(), data_dir=None)`: on-demand servers (e.g. default
  timing rules, short token lifetime, TLS); all are killed at session end.
- `kp`, `kp2`, `svc`: clients for the dev admin, the second admin and the service ID.

The binary is `target/debug/keyhold` unless KEYHOLD_BIN is set.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from api_helpers import Server, start_server  # noqa: E402


@pytest.fixture(scope="session")
def _servers():
    started: list[Server] = []
    yield started
    for s in started:
        s.stop()  # SIGTERM, then SIGKILL after 10 s


@pytest.fixture(scope="session")
def server_factory(_servers, tmp_path_factory):
    def make(fast=True, extra=(), data_dir=None, listen="127.0.0.1:0", wait=True, env=None) -> Server:
        if data_dir is None:
            data_dir = tmp_path_factory.mktemp("keyhold-data")
        srv = start_server(Path(data_dir), fast=fast, extra=extra, listen=listen, wait=wait, env=env)
        _servers.append(srv)
        return srv
    return make


@pytest.fixture(scope="session")
def server(server_factory) -> Server:
    return server_factory()


@pytest.fixture(scope="session")
def kp(server):
    return server.client()


@pytest.fixture(scope="session")
def kp2(server):
    return server.client(server.second_apikey)


@pytest.fixture(scope="session")
def svc(server):
    return server.client(server.service_apikey)


@pytest.fixture(autouse=True)
def _server_still_alive(request):
    """After every test, the session server (if used) must still be running."""
    yield
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        if not srv.alive():
            rc = srv.proc.returncode
            how = {-9: "killed by SIGKILL (from outside the suite?)", -15: "killed by SIGTERM (from outside the suite?)",
                   -6: "aborted (SIGABRT)", 101: "panicked (exit 101)"}.get(rc, f"exit status {rc}")
            raise AssertionError(f"keyhold server died: {how}; stderr tail:\n{srv.stderr_tail()}")
