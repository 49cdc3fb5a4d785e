"""Helpers for the audit trail tests (docs/audit.md): a server whose audit store the test
can reach directly (SQLite: DATA_DIR/audit.db and the records file audit.jsonl; PostgreSQL under $KEYHOLD_STORE: a schema
of the test's own), reading events and exports, and `keyhold audit verify`."""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import requests

from api_helpers import keyhold_bin, start_server


def pg_url() -> str | None:
    url = os.environ.get("KEYHOLD_STORE", "")
    return url if url.startswith(("postgres://", "postgresql://")) else None


class AuditServer:
    """A dev server with the audit trail on and an --audit-log file."""

    def __init__(self, tmp_path: Path, extra=()):
        self.data = tmp_path / "server"
        self.log = tmp_path / "audit.jsonl"
        self.schema = None
        store = []
        base = pg_url()
        if base:
            self.schema = "audit_" + uuid.uuid4().hex[:12]
            sep = "&" if "?" in base else "?"
            store = ["--store", f"{base}{sep}schema={self.schema}"]
        self.srv = start_server(self.data, extra=[*store, "--audit-log", str(self.log), *extra])
        self.kp = self.srv.client()

    def stop(self):
        self.srv.stop()

    # reading -----------------------------------------------------------------------
    def headers(self, apikey=None):
        return {"Authorization": "Bearer " + self.srv.token(apikey)}

    def events(self, **params) -> list[dict]:
        """Every event matching the filters, following the pages."""
        out, after = [], 0
        while True:
            r = requests.get(self.srv.url + "/audit/v1/events", headers=self.headers(),
                             params={**params, "limit": 1000, "after": after}, timeout=30)
            assert r.status_code == 200, r.text
            body = r.json()
            out += body["resources"]
            if body["next_after"] is None:
                return out
            after = body["next_after"]

    def export_text(self) -> str:
        r = requests.get(self.srv.url + "/audit/v1/export", headers=self.headers(), timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return r.text

    def keys_json(self) -> str:
        r = requests.get(self.srv.url + "/audit/v1/keys", timeout=30)
        assert r.status_code == 200, r.text
        return r.text

    # the raw store -------------------------------------------------------------------
    def sql(self, statement: str) -> str:
        """Runs SQL on the audit store (the server may be running); returns psql/sqlite output."""
        if self.schema:
            full = f'SET search_path TO "{self.schema}"; {statement}'
            return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", pg_url(), "-c", full],
                                  check=True, capture_output=True, text=True).stdout
        import sqlite3
        with sqlite3.connect(self.data / "audit.db") as c:
            rows = c.execute(statement).fetchall()
        return "\n".join("|".join(str(x) for x in r) for r in rows)

    def _batch(self, seq: int) -> tuple[int, list[str]]:
        """The stored batch (one row per group commit) holding record `seq`: its key and lines."""
        first = int(self.sql("SELECT first_seq FROM audit_batches "
                             f"WHERE first_seq <= {seq} AND last_seq >= {seq}").strip())
        if self.schema:
            records = self.sql(f"SELECT records FROM audit_batches WHERE first_seq = {first}")
        else:
            records = self._sqlite_records(first)
        return first, [ln for ln in records.split("\n") if ln.strip()]

    def _records_file(self) -> Path:
        return self.data / "audit.jsonl"

    def _sqlite_records(self, first: int) -> str:
        """SQLite: a batch's lines from the records file (rows of earlier versions hold them inline)."""
        import sqlite3
        with sqlite3.connect(self.data / "audit.db") as c:
            inline, at, length = c.execute("SELECT records, records_at, records_len FROM audit_batches "
                                           "WHERE first_seq = ?", (first,)).fetchone()
        if at is None:
            return inline
        with open(self._records_file(), "rb") as f:
            f.seek(int(at))
            return f.read(int(length)).decode()

    def stored_record(self, seq: int) -> str:
        """Record `seq`'s line as the store holds it."""
        _, lines = self._batch(seq)
        return next(ln for ln in lines if json.loads(ln)["seq"] == seq)

    def store_record(self, seq: int, line: str | None):
        """Writes `line` in place of record `seq` in its stored batch, or (None) removes it:
        tampering as someone with write access to the store would (SQLite: the records file,
        with the index's offsets kept consistent, under the database's write lock)."""
        first, lines = self._batch(seq)
        out = [line if json.loads(ln)["seq"] == seq else ln for ln in lines]
        text = "".join(ln + "\n" for ln in out if ln is not None)
        if self.schema:
            self.sql(f"UPDATE audit_batches SET records = '{text.replace(chr(39), chr(39) * 2)}' "
                     f"WHERE first_seq = {first}")
            return
        import sqlite3
        c = sqlite3.connect(self.data / "audit.db", isolation_level=None, timeout=10)
        try:
            c.execute("BEGIN IMMEDIATE")
            at, length = c.execute("SELECT records_at, records_len FROM audit_batches "
                                   "WHERE first_seq = ?", (first,)).fetchone()
            new = text.encode()
            with open(self._records_file(), "r+b") as f:
                f.seek(at + length)
                rest = f.read()
                f.seek(at)
                f.write(new + rest)
                f.truncate()
            delta = len(new) - length
            c.execute("UPDATE audit_batches SET records_len = ? WHERE first_seq = ?", (len(new), first))
            c.execute("UPDATE audit_batches SET records_at = records_at + ? "
                      "WHERE first_seq > ? AND records_at IS NOT NULL", (delta, first))
            c.execute("COMMIT")
        finally:
            c.close()

    def raw_store_bytes(self) -> bytes:
        """Everything the audit store holds, as bytes (files, or a dump of the table)."""
        if self.schema:
            return self.sql("SELECT string_agg(records, '') FROM audit_batches").encode()
        out = b""
        for p in self.data.iterdir():
            if p.name.startswith("audit."):
                out += p.read_bytes()
        return out


def verify(path: Path, keys: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([keyhold_bin(), "audit", "verify", str(path), "--public-key", str(keys), *extra],
                          capture_output=True, text=True, timeout=60)


def lines_of(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def records(text: str) -> list[dict]:
    return [json.loads(ln) for ln in lines_of(text)]
