"""Local accounts with roles. Passwords are stored as scrypt hashes, never in clear.

Every check of a password (a login, and the current password of a password change) is
rate-limited from the ``login_attempts`` table, so the limit holds across web workers and
restarts: after ``MAX_FAILURES`` failed attempts for one account from one address, or
``MAX_FAILURES_PER_ADDRESS`` from one address for any accounts, within ``LOCKOUT_SECONDS``,
that address is refused until the window has passed (a correct password included). Another
address can still log in: an attacker cannot lock a labeler out. Without the password change
in the count, a stolen session would be an unthrottled oracle for the account's password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import sqlite_utils

from appliance import audit
from appliance.database import write_transaction
from appliance.exceptions import AomasError

ROLES = ("admin", "clinician", "labeler", "ml-engineer", "researcher")
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD_LENGTH = 12
MAX_FAILURES, MAX_FAILURES_PER_ADDRESS, LOCKOUT_SECONDS = 5, 20, 900.0
# Checked when the account does not exist, so a wrong name costs the same time as a wrong
# password and does not reveal which accounts exist.
_UNKNOWN_ACCOUNT_HASH = "scrypt$" + "00" * 16 + "$" + "00" * 64


class LoginRefused(AomasError):
    """Wrong name or password, a disabled account, or too many attempts."""


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
    _check_strength(password)
    with write_transaction(db):
        if db["users"].count_where("username = ?", [username]):
            return False
        db["users"].insert({"username": username, "password_hash": hash_password(password),
                            "role": role, "created_at": time.time(), "disabled": 0})
        audit.record(db, actor=actor, action="user.create", object_kind="user",
                     object_id=username, detail={"role": role})
    return True


def _check_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AomasError(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")


def _locked_out(db: sqlite_utils.Database, username: str, remote_addr: str,
                now: float) -> bool:
    since = now - LOCKOUT_SECONDS
    failures = db.execute(
        "SELECT count(*) FROM login_attempts WHERE username = ? AND remote_addr = ? "
        "AND at > ? AND succeeded = 0", [username, remote_addr, since]).fetchone()[0]
    from_address = db.execute(
        "SELECT count(*) FROM login_attempts WHERE remote_addr = ? AND at > ? "
        "AND succeeded = 0", [remote_addr, since]).fetchone()[0]
    return failures >= MAX_FAILURES or from_address >= MAX_FAILURES_PER_ADDRESS


def _locked_message() -> str:
    return (f"too many failed logins from this address; try again in "
            f"{LOCKOUT_SECONDS / 60:.0f} minutes")


def authenticate(db: sqlite_utils.Database, username: str, password: str, *,
                 remote_addr: str, now: float | None = None) -> dict:
    """The account (username, role) if the password is right; else LoginRefused."""
    now = time.time() if now is None else now
    locked = _locked_out(db, username, remote_addr, now)
    row = db.execute("SELECT username, role, password_hash, disabled FROM users "
                     "WHERE username = ?", [username]).fetchone()
    matches = verify_password(password, row[2] if row else _UNKNOWN_ACCOUNT_HASH)
    succeeded = bool(row) and matches and not row[3] and not locked
    with write_transaction(db):
        db["login_attempts"].insert({"username": username, "remote_addr": remote_addr,
                                     "at": now, "succeeded": int(succeeded)})
        audit.record(db, actor=username if row else "(unknown account)",
                     action="session.login" if succeeded else "session.login_refused",
                     object_kind="user", object_id=username if row else "",
                     detail={"remote_addr": remote_addr, "locked": locked})
    if locked:
        raise LoginRefused(_locked_message())
    if not succeeded:
        # One message for every cause: a guesser learns nothing about the account.
        raise LoginRefused("wrong user name or password, or the account is disabled")
    return {"username": row[0], "role": row[1]}


def change_password(db: sqlite_utils.Database, username: str, current: str, new: str, *,
                    remote_addr: str, now: float | None = None) -> None:
    """The user's own change: the current password is checked again, under the same rate
    limit as logins (a wrong one counts as a failed login from ``remote_addr``)."""
    now = time.time() if now is None else now
    locked = _locked_out(db, username, remote_addr, now)
    row = db.execute("SELECT password_hash FROM users WHERE username = ? AND disabled = 0",
                     [username]).fetchone()
    right = row is not None and verify_password(current, row[0])
    if locked or not right:
        with write_transaction(db):
            db["login_attempts"].insert({"username": username, "remote_addr": remote_addr,
                                         "at": now, "succeeded": 0})
            audit.record(db, actor=username, action="user.password_change_refused",
                         object_kind="user", object_id=username,
                         detail={"remote_addr": remote_addr, "locked": locked})
        raise LoginRefused(_locked_message() if locked else "the current password is wrong")
    _check_strength(new)
    if new == current:
        raise AomasError("the new password must differ from the current one")
    with write_transaction(db):
        db["users"].update(username, {"password_hash": hash_password(new),
                                      "password_changed_at": now})
        audit.record(db, actor=username, action="user.password_change", object_kind="user",
                     object_id=username)


def set_disabled(db: sqlite_utils.Database, username: str, disabled: bool, *,
                 actor: str) -> None:
    """Disable (or enable again) an account; its open sessions end at their next request."""
    with write_transaction(db):
        if not db["users"].count_where("username = ?", [username]):
            raise AomasError(f"no account {username!r}; see `aomas user list`")
        db["users"].update(username, {"disabled": int(disabled)})
        audit.record(db, actor=actor, action="user.disable" if disabled else "user.enable",
                     object_kind="user", object_id=username)


def list_users(db: sqlite_utils.Database) -> list[dict]:
    return [{k: row[k] for k in ("username", "role", "created_at", "disabled")}
            for row in db["users"].rows_where(order_by="username")]


def generate_password() -> str:
    return secrets.token_urlsafe(18)
