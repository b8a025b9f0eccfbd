"""Local accounts: roles, login with rate limiting, password change, disabling; all audited."""

from __future__ import annotations

import pytest

from appliance import audit
from appliance.access import accounts
from appliance.access.accounts import LoginRefused
from appliance.database import connect
from appliance.exceptions import AomasError

PASSWORD = "correct horse battery"
NOW = 1_900_000_000.0


@pytest.fixture
def db(tmp_path):
    database = connect(tmp_path / "aomas.db")
    accounts.create_user(database, "lena", PASSWORD, "labeler", actor="admin")
    return database


def test_the_roles_are_the_five_the_review_page_knows():
    assert accounts.ROLES == ("admin", "clinician", "labeler", "ml-engineer", "researcher")


def test_a_right_password_logs_in_and_a_wrong_one_says_nothing_about_the_account(db):
    assert accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.5", now=NOW) == \
        {"username": "lena", "role": "labeler"}
    with pytest.raises(LoginRefused) as wrong_password:
        accounts.authenticate(db, "lena", "not it at all", remote_addr="10.0.0.5", now=NOW)
    with pytest.raises(LoginRefused) as no_such_account:
        accounts.authenticate(db, "nobody", PASSWORD, remote_addr="10.0.0.5", now=NOW)
    assert str(wrong_password.value) == str(no_such_account.value)
    actions = [e["action"] for e in audit.events(db) if e["action"].startswith("session.")]
    assert actions == ["session.login", "session.login_refused", "session.login_refused"]


def test_repeated_failures_lock_that_address_out_for_a_while_but_not_others(db):
    for attempt in range(accounts.MAX_FAILURES):
        with pytest.raises(LoginRefused, match="wrong user name"):
            accounts.authenticate(db, "lena", f"guess {attempt}", remote_addr="10.0.0.9",
                                  now=NOW + attempt)
    # Locked: even the right password is refused from that address...
    with pytest.raises(LoginRefused, match="too many failed logins"):
        accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.9", now=NOW + 10)
    # ...while the labeler at her own desk still gets in,
    assert accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.5", now=NOW + 11)
    # and the attacker's address is let in again once the window has passed.
    later = NOW + 10 + accounts.LOCKOUT_SECONDS + 1
    assert accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.9", now=later)


def test_one_address_guessing_many_accounts_is_locked_out_too(db):
    for attempt in range(accounts.MAX_FAILURES_PER_ADDRESS):
        with pytest.raises(LoginRefused):
            accounts.authenticate(db, f"user{attempt}", "guess", remote_addr="10.0.0.66",
                                  now=NOW + attempt)
    with pytest.raises(LoginRefused, match="too many"):
        accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.66", now=NOW + 30)


def test_a_disabled_account_cannot_log_in_until_enabled(db):
    accounts.set_disabled(db, "lena", True, actor="admin")
    with pytest.raises(LoginRefused):
        accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.5", now=NOW)
    accounts.set_disabled(db, "lena", False, actor="admin")
    assert accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.5", now=NOW + 1)
    assert [e["actor"] for e in audit.events(db) if e["action"] in
            ("user.disable", "user.enable")] == ["admin", "admin"]
    with pytest.raises(AomasError, match="aomas user list"):
        accounts.set_disabled(db, "nobody", True, actor="admin")


def test_changing_the_password_needs_the_current_one_and_a_strong_new_one(db):
    with pytest.raises(LoginRefused):
        accounts.change_password(db, "lena", "wrong current", "a much longer passphrase",
                                 remote_addr="10.0.0.5", now=NOW)
    with pytest.raises(AomasError, match="at least"):
        accounts.change_password(db, "lena", PASSWORD, "short", remote_addr="10.0.0.5", now=NOW)
    accounts.change_password(db, "lena", PASSWORD, "a much longer passphrase",
                             remote_addr="10.0.0.5", now=NOW)
    with pytest.raises(LoginRefused):
        accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.5", now=NOW)
    assert accounts.authenticate(db, "lena", "a much longer passphrase",
                                 remote_addr="10.0.0.5", now=NOW + 1)
    assert "user.password_change" in {e["action"] for e in audit.events(db)}


def test_wrong_current_passwords_count_as_failed_logins(db):
    # A stolen session must not be an unthrottled oracle for the account's password.
    refused = []
    for attempt in range(25):
        try:
            accounts.change_password(db, "lena", f"guess {attempt:02d} of many",
                                     "a much longer passphrase", remote_addr="10.0.0.9",
                                     now=NOW + attempt)
        except LoginRefused as error:
            refused.append(str(error))
    assert len(refused) == 25
    assert refused[:accounts.MAX_FAILURES] == ["the current password is wrong"] * \
        accounts.MAX_FAILURES
    assert all("too many failed" in message for message in refused[accounts.MAX_FAILURES:])
    # Locked means locked: the right current password, and a login, are refused too ...
    with pytest.raises(LoginRefused, match="too many failed logins"):
        accounts.change_password(db, "lena", PASSWORD, "a much longer passphrase",
                                 remote_addr="10.0.0.9", now=NOW + 30)
    with pytest.raises(LoginRefused, match="too many failed logins"):
        accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.9", now=NOW + 31)
    # ... from that address only, and every refusal is in the audit log.
    assert accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.5", now=NOW + 32)
    actions = [e["action"] for e in audit.events(db)]
    assert actions.count("user.password_change_refused") == 26
    assert accounts.authenticate(db, "lena", PASSWORD, remote_addr="10.0.0.9",
                                 now=NOW + 31 + accounts.LOCKOUT_SECONDS)


def test_old_role_names_are_renamed_by_the_migration(tmp_path):
    import sqlite3

    # A database as 0003 left it, with accounts under the old role names.
    path = tmp_path / "old.db"
    database = connect(path)
    database.execute("DELETE FROM _sqlite_migrations WHERE name = '0004_roles_and_logins'")
    database.execute("DROP TABLE login_attempts")
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE users DROP COLUMN password_changed_at")
    conn.executemany("INSERT INTO users (username, password_hash, role, created_at, disabled) "
                     "VALUES (?, 'x', ?, 0, 0)", [("v", "viewer"), ("m", "ml_engineer")])
    conn.commit()
    conn.close()
    database = connect(path)
    assert dict(database.execute("SELECT username, role FROM users").fetchall()) == \
        {"v": "researcher", "m": "ml-engineer"}
    assert "login_attempts" in database.table_names()
