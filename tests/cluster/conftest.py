"""Fixtures for the Keyhold cluster suite: two `keyhold serve --dev` processes on one
PostgreSQL (issue #5), over real HTTP.

Run it under scripts/with-postgres, which provides
  KEYHOLD_TEST_PG       postgres://postgres@127.0.0.1:PORT/postgres
  KEYHOLD_TEST_PG_CTL   helper: stop|crash|start|status|psql ARGS...

  scripts/with-postgres .deps/venv/bin/python -m pytest tests/cluster -q

A missing PostgreSQL, or a binary without `--store`, FAILS the suite (never skips).
The binary is target/debug/keyhold unless KEYHOLD_BIN is set.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster_helpers import Cluster, keyhold_bin, start_node  # noqa: E402


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("KEYHOLD_TEST_PG")
    if not url:
        pytest.fail("KEYHOLD_TEST_PG is not set: run this suite under scripts/with-postgres", pytrace=False)
    return url


@pytest.fixture(scope="session")
def pg_ctl(pg_url):
    ctl = os.environ.get("KEYHOLD_TEST_PG_CTL")
    if not ctl or not os.access(ctl, os.X_OK):
        pytest.fail("KEYHOLD_TEST_PG_CTL is not set or not executable: run under scripts/with-postgres",
                    pytrace=False)

    def run(*args, check=True, timeout=90):
        p = subprocess.run([ctl, *args], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{ctl} {' '.join(args)} failed ({p.returncode}): {p.stdout}{p.stderr}")
        return p
    return run


@pytest.fixture(scope="session")
def psql(pg_ctl):
    def run(sql) -> list[list[str]]:
        out = pg_ctl("psql", "-tA", "-F", "\t", "-c", sql).stdout
        return [line.split("\t") for line in out.splitlines() if line.strip()]
    return run


@pytest.fixture(scope="session")
def keyhold_has_store():
    binary = keyhold_bin()
    try:
        out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    except OSError as e:
        pytest.fail(f"cannot run {binary}: {e}", pytrace=False)
    if "--store" not in out:
        pytest.fail(f"{binary} has no --store option: the PostgreSQL store is not in this build", pytrace=False)


@pytest.fixture(scope="session")
def _all_nodes():
    nodes = []
    yield nodes
    for n in nodes:
        n.stop()


@pytest.fixture(scope="session")
def start_cluster(pg_url, keyhold_has_store, tmp_path_factory, _all_nodes):
    """start_cluster(n=2, fast=True, extra=(), store=pg_url) -> Cluster.

    Node 1 starts on a fresh data dir and the store URL; once it is ready, nodes 2..n
    start on the SAME data dir and URL (they reuse master.key and dev.json)."""
    def start(n=2, fast=True, extra=(), store=None, data_dir=None) -> Cluster:
        store = store or pg_url
        data_dir = Path(data_dir or tmp_path_factory.mktemp("keyhold-cluster"))
        nodes = []
        first = start_node("node1", data_dir, store, fast=fast, extra=extra)
        _all_nodes.append(first)
        nodes.append(first)
        for i in range(2, n + 1):
            nd = start_node(f"node{i}", data_dir, store, fast=fast, extra=extra)
            _all_nodes.append(nd)
            nodes.append(nd)
        for nd in nodes[1:]:
            for f in ("instance_id", "apikey", "second_apikey", "service_apikey"):
                assert nd.info[f] == first.info[f], \
                    f"{nd.name} on the same data dir and store is not the same deployment: {f} differs"
            assert nd.url != first.url
        return Cluster(nodes)
    return start


@pytest.fixture(scope="module")
def cluster(start_cluster) -> Cluster:
    """A module-wide two-node cluster with fast timing rules (rotate/cooldown/purge = 0)."""
    c = start_cluster()
    yield c
    for n in c.nodes:
        n.stop()


@pytest.fixture(autouse=True)
def _postgres_running_and_nodes_alive(request, _all_nodes):
    """After every test: PostgreSQL is running again (a failed outage test must not poison
    the rest) and no node of this test died."""
    before = {id(n) for n in _all_nodes if n.alive()}
    yield
    ctl = os.environ.get("KEYHOLD_TEST_PG_CTL")
    if ctl:
        subprocess.run([ctl, "thaw"], check=False)
    if ctl and subprocess.run([ctl, "status"]).returncode != 0:
        subprocess.run([ctl, "start"], check=False)
    dead = [n for n in _all_nodes if id(n) in before and not n.alive() and not n.stopped_by_suite]
    if dead:
        how = {0: "exit 0 (graceful: a SIGTERM/SIGINT from outside the suite?)", -9: "SIGKILL from outside the suite",
               -6: "aborted (SIGABRT)", 101: "panicked (exit 101)"}
        msgs = [f"{n.name} ({n.data_dir}): {how.get(n.proc.returncode, f'exit {n.proc.returncode}')}; "
                f"stderr (without backtrace frames):\n{n.stderr_summary(1500)}" for n in dead]
        raise AssertionError("keyhold node died during the test:\n" + "\n".join(msgs))
