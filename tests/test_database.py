"""The database: durable pragmas, ordered migrations, immediate write transactions."""

from __future__ import annotations

import sqlite3

import pytest

from appliance.database import connect, write_transaction
from appliance.migrations import migrations


def test_every_connection_is_wal_with_full_sync(tmp_path):
    db = connect(tmp_path / "aomas.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_migrations_apply_once_in_order(tmp_path):
    connect(tmp_path / "aomas.db").conn.close()
    db = connect(tmp_path / "aomas.db")  # again: nothing new to apply
    applied = [r[0] for r in db.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    assert applied == ["0001_core_tables", "0002_accounts", "0003_outbox_details",
                       "0004_roles_and_logins", "0005_review",
                       "0006_adjudication", "0007_reviews", "0008_run_progress",
                       "0009_tile_error_probability", "0010_series_description",
                       "0011_model_registry", "0012_gate_results", "0013_model_routing",
                       "0014_alerts_and_drift", "0015_audit_chain"]
    assert migrations.pending(db) == []
    assert {"instances", "series", "cases", "runs", "audit_events", "outbox", "users"} <= set(
        db.table_names())


def test_a_committed_write_survives_reopening_and_a_failed_one_leaves_nothing(tmp_path):
    db = connect(tmp_path / "aomas.db")
    with write_transaction(db):
        db["audit_events"].insert({"at": 1.0, "actor": "t", "action": "a", "object_kind": "k",
                                   "object_id": "1", "detail": "{}"})
    with pytest.raises(RuntimeError), write_transaction(db):
        db["audit_events"].insert({"at": 2.0, "actor": "t", "action": "b", "object_kind": "k",
                                   "object_id": "2", "detail": "{}"})
        raise RuntimeError("boom")
    db.conn.close()
    reopened = sqlite3.connect(tmp_path / "aomas.db")
    assert reopened.execute("SELECT action FROM audit_events").fetchall() == [("a",)]


def test_write_transaction_takes_the_write_lock_up_front(tmp_path):
    first, second = connect(tmp_path / "aomas.db"), connect(tmp_path / "aomas.db")
    second.conn.execute("PRAGMA busy_timeout=100")
    with write_transaction(first):
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            second.conn.execute("BEGIN IMMEDIATE")
