"""Local accounts with roles. Passwords are stored as scrypt hashes, never in clear."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import sqlite_utils

from appliance import audit
from appliance.database import write_transaction
from appliance.exceptions import AomasError

ROLES = ("admin", "labeler", "ml_engineer", "viewer")
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD_LENGTH = 12


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, salt, digest = stored.split("$")
    except ValueError:
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


def create_user(db: sqlite_utils.Database, username: str, password: str, role: str, *,
                actor: str) -> bool:
    """Create an account; returns False if it already exists (left unchanged)."""
    if role not in ROLES:
        raise AomasError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AomasError(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    with write_transaction(db):
        if db["users"].count_where("username = ?", [username]):
            return False
        db["users"].insert({"username": username, "password_hash": hash_password(password),
                            "role": role, "created_at": time.time(), "disabled": 0})
        audit.record(db, actor=actor, action="user.create", object_kind="user",
                     object_id=username, detail={"role": role})
    return True


def list_users(db: sqlite_utils.Database) -> list[dict]:
    return [{k: row[k] for k in ("username", "role", "created_at", "disabled")}
            for row in db["users"].rows_where(order_by="username")]


def generate_password() -> str:
    return secrets.token_urlsafe(18)
