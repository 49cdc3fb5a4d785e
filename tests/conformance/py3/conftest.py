import pytest

from kh3 import FAST_FLAGS, Server


@pytest.fixture(scope="session")
def server():
    """Dev server with every timing rule switched off."""
    s = Server(FAST_FLAGS).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def kp(server):
    return server.client()


@pytest.fixture(scope="session")
def kp2(server):
    """Client authenticated as the second, different admin principal."""
    return server.client(server.info["second_apikey"])


@pytest.fixture(scope="session")
def inst(server):
    return server.instance


@pytest.fixture
def fresh_server():
    """A private dev server (fast rules) for tests that change instance-wide state."""
    s = Server(FAST_FLAGS).start()
    yield s
    s.stop()


@pytest.fixture
def strict_server():
    """A private dev server with the default timing rules (rotate 1/h, 30 s cooldown, 4 h purge delay)."""
    s = Server([]).start()
    yield s
    s.stop()
