"""The audit log as a hash chain: an edited, deleted or inserted event is found by
`aomas audit verify`, and so is a rewrite of the whole chain once its head was logged."""

from __future__ import annotations

import json
import sqlite3

import pytest
import sqlite_utils

from appliance import audit
from appliance.database import connect
from appliance.migrations import migrations
from tests.conftest import Box

PASSWORD = "correct horse battery staple"


def _box_with_events(tmp_path) -> Box:
    box = Box(tmp_path)
    (tmp_path / "pw").write_text(PASSWORD)
    box.aomas("init", "--admin-user", "ada", "--admin-password-file", str(tmp_path / "pw"))
    for name in ("lena", "rita", "tom"):
        box.aomas("user", "add", name, "--role", "labeler", "--password-file",
                  str(tmp_path / "pw"))
    assert len(box.query("SELECT id FROM audit_events")) >= 5
    return box


def _tamper(box: Box, *statements: tuple[str, tuple]) -> None:
    """What someone holding the database file can do: lift the triggers, change rows."""
    conn = sqlite3.connect(box.data_dir / "aomas.db")
    conn.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    conn.execute("DROP INDEX IF EXISTS idx_audit_events_previous_hash")
    for sql, params in statements:
        conn.execute(sql, params)
    conn.commit()
    conn.close()


def _verify(box: Box, *args: str):
    return box.aomas("audit", "verify", *args, check=False)


def test_an_untouched_log_verifies_and_the_check_is_itself_audited(tmp_path):
    box = _box_with_events(tmp_path)
    result = _verify(box)
    assert result.returncode == 0, result.stderr
    assert "audit log intact" in result.stdout
    checks = box.query("SELECT detail FROM audit_events WHERE action = 'audit.verify'")
    assert json.loads(checks[0]["detail"])["intact"] is True
    # The check's own event is chained too: a second check still holds.
    assert _verify(box).returncode == 0


@pytest.mark.parametrize("change", ["edit", "delete", "insert"])
def test_an_edited_deleted_or_inserted_event_is_named(tmp_path, change):
    box = _box_with_events(tmp_path)
    ids = [row["id"] for row in box.query("SELECT id FROM audit_events ORDER BY id")]
    target = ids[2]
    if change == "edit":
        _tamper(box, ("UPDATE audit_events SET actor = 'nobody' WHERE id = ?", (target,)))
        expected = f"event {target} was edited"
    elif change == "delete":
        _tamper(box, ("DELETE FROM audit_events WHERE id = ?", (target,)))
        expected = f"event {target} is missing"
    else:
        # A forged event slipped in after `target`, the later ones renumbered, and the forged
        # one given a hash that chains correctly to its predecessor.
        previous_hash = box.query("SELECT event_hash FROM audit_events WHERE id = ?",
                                  (target,))[0][0]
        forged = {"id": target + 1, "at": 1.0, "actor": "ada", "action": "user.delete",
                  "object_kind": "user", "object_id": "rita", "detail": "{}"}
        _tamper(box,
                ("UPDATE audit_events SET id = -id WHERE id > ?", (target,)),
                ("UPDATE audit_events SET id = 1 - id WHERE id < 0", ()),
                ("INSERT INTO audit_events (id, at, actor, action, object_kind, object_id, "
                 "detail, previous_hash, event_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (*forged.values(), previous_hash, audit.event_hash(forged, previous_hash))))
        expected = f"event {target + 2} does not follow event {target + 1}"
    result = _verify(box)
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1     # one line


def test_a_rewritten_chain_is_found_by_the_head_logged_before(tmp_path):
    box = _box_with_events(tmp_path)
    logged = box.aomas("audit", "head").stdout
    assert logged.startswith("audit chain head: event ")
    # The journal's copy of the head, as an admin would export it (journalctl -o cat).
    journal = tmp_path / "journal.txt"
    journal.write_text("some other line\n" + logged)
    (box.data_dir / audit.HEADS_FILE).unlink()      # the attacker removes the local copy too

    # Edit an early event and recompute every hash after it: the chain itself holds again.
    rows = box.query("SELECT * FROM audit_events ORDER BY id")
    statements = [("UPDATE audit_events SET actor = 'nobody' WHERE id = ?", (rows[1]["id"],))]
    previous_hash = audit.GENESIS_HASH
    for row in rows:
        event = {**dict(row), "actor": "nobody" if row["id"] == rows[1]["id"] else row["actor"]}
        chained = audit.event_hash(event, previous_hash)
        statements.append(("UPDATE audit_events SET previous_hash = ?, event_hash = ? "
                           "WHERE id = ?", (previous_hash, chained, row["id"])))
        previous_hash = chained
    _tamper(box, *statements)
    assert _verify(box).returncode == 0       # nothing else to compare against
    result = _verify(box, "--heads", str(journal))
    assert result.returncode == 1
    head_id = int(logged.split()[4])
    assert f"event {head_id} differs from the head logged for it" in result.stderr
    assert box.query("SELECT count(*) FROM audit_events WHERE action = 'audit.head'")[0][0] == 1

    # Events cut from the end are found the same way.
    _tamper(box, ("DELETE FROM audit_events WHERE id >= ?", (head_id,)))
    result = _verify(box, "--heads", str(journal))
    assert "events were deleted from the end" in result.stderr


def test_events_logged_before_the_chain_are_chained_by_the_migration(tmp_path):
    path = tmp_path / "aomas.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="0015_audit_chain")
    for n in range(3):
        old["audit_events"].insert({"at": float(n), "actor": "ada", "action": "user.create",
                                    "object_kind": "user", "object_id": f"u{n}",
                                    "detail": "{}"})
    old.conn.close()
    db = connect(path)
    audit.record(db, actor="ada", action="user.create", object_kind="user", object_id="u3")
    result = audit.verify(db)
    assert result.intact and result.events == 4
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit_events SET actor = 'x'")
