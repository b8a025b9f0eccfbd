"""Web sessions, kept in the database so that the server can end them.

The browser's cookie carries only a random session id (signed by Flask). A session ends at
logout, after ``idle_seconds`` without a request, when its account is disabled, and when the
account's password changes: a copied cookie is then worth nothing.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import sqlite_utils

from appliance import audit
from appliance.database import write_transaction


def start(db: sqlite_utils.Database, username: str, *, remote_addr: str) -> str:
    """A new session for an account that has just logged in; returns its id."""
    session_id = secrets.token_urlsafe(32)
    now = time.time()
    with write_transaction(db):
        db["web_sessions"].insert({"session_id": session_id, "username": username,
                                   "created_at": now, "last_seen_at": now,
                                   "remote_addr": remote_addr})
    return session_id


def current_user(db: sqlite_utils.Database, session_id: str, *,
                 idle_seconds: float) -> dict[str, Any] | None:
    """The session's account (username, role) if the session is still good, else None."""
    now = time.time()
    row = db.execute(
        "SELECT u.username, u.role, u.disabled, u.password_changed_at, s.created_at, "
        "s.last_seen_at FROM web_sessions s JOIN users u USING (username) "
        "WHERE s.session_id = ? AND s.ended_at IS NULL", [session_id]).fetchone()
    if row is None:
        return None
    username, role, disabled, password_changed_at, created_at, last_seen_at = row
    if disabled or (password_changed_at or 0) > created_at or now - last_seen_at > idle_seconds:
        end(db, session_id)
        return None
    if now - last_seen_at > 10:  # a write per click is not needed to keep idle time honest
        db.execute("UPDATE web_sessions SET last_seen_at = ? WHERE session_id = ?",
                   [now, session_id])
    return {"username": username, "role": role}


def end(db: sqlite_utils.Database, session_id: str, *, actor: str | None = None) -> None:
    """End the session; with ``actor``, the person logged out (audited)."""
    with write_transaction(db):
        db.execute("UPDATE web_sessions SET ended_at = ? WHERE session_id = ? "
                   "AND ended_at IS NULL", [time.time(), session_id])
        if actor is not None:
            audit.record(db, actor=actor, action="session.logout", object_kind="user",
                         object_id=actor)
