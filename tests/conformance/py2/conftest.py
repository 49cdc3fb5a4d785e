import pytest

from kh2 import FAST_FLAGS, Server


@pytest.fixture(scope="session")
def server():
    s = Server(FAST_FLAGS).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def kp(server):
    return server.client()


@pytest.fixture(scope="session")
def kp2(server):
    return server.client(server.info["second_apikey"])


@pytest.fixture
def fresh_server():
    s = Server(FAST_FLAGS).start()
    yield s
    s.stop()


@pytest.fixture
def strict_server():
    s = Server([]).start()
    yield s
    s.stop()
