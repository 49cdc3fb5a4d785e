"""Fixtures for the CLI suite: a real `keyhold serve --dev` (started as tests/api does) and
a `kh(...)` helper that runs the `keyhold` client commands against it.

Each run gets a private config file (KEYHOLD_CONFIG) so nobody's ~/.config is read.
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from api_helpers import keyhold_bin, start_server  # noqa: E402


@dataclass
class Run:
    rc: int
    out: str
    err: str
    raw: bytes

    def json(self):
        return json.loads(self.out)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("keyhold-cli-data"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def dev_json(server):
    return str(server.data_dir / "dev.json")


@pytest.fixture(scope="session")
def kh(server, dev_json, tmp_path_factory):
    config = tmp_path_factory.mktemp("cfg") / "config.toml"

    def run(*args, apikey=None, stdin=None, env=None, dev=True, timeout=120) -> Run:
        e = {k: v for k, v in os.environ.items() if not k.startswith("KEYHOLD_")}
        e["KEYHOLD_CONFIG"] = str(config)
        if dev:
            e["KEYHOLD_DEV_JSON"] = dev_json
        if apikey is not None:
            e["KEYHOLD_APIKEY"] = apikey
        e.update(env or {})
        p = subprocess.run([keyhold_bin(), *map(str, args)], input=stdin, capture_output=True,
                           env=e, timeout=timeout)
        return Run(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"),
                   p.stdout)

    run.config = config
    return run
