"""Login, logout and the user's own password change (pages; the API twins are in ui.api)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for

from appliance.access import accounts, sessions
from appliance.exceptions import AomasError
from ui.security import public, requires

blueprint = Blueprint("auth", __name__)


@blueprint.route("/login", methods=["GET", "POST"])
@public
def login():
    next_page = _safe_next(request.values.get("next", ""))
    if request.method == "GET":
        return render_template("login.html", next=next_page)
    try:
        log_in(request.form.get("username", ""), request.form.get("password", ""))
    except accounts.LoginRefused as error:
        return render_template("login.html", next=next_page, error=str(error)), 401
    return redirect(next_page or url_for("pages.worklist"))


def log_in(username: str, password: str) -> dict:
    """Check the password and start a server-side session (used by the page and the API)."""
    account = accounts.authenticate(g.db, username, password,
                                    remote_addr=request.remote_addr or "")
    session.clear()  # nothing from before the login carries over
    session["session_id"] = sessions.start(g.db, account["username"],
                                           remote_addr=request.remote_addr or "")
    session.permanent = True
    return account


def log_out() -> None:
    if g.user is not None:
        sessions.end(g.db, session["session_id"], actor=g.user["username"])
    session.clear()


@blueprint.post("/logout")
@requires("own_account")
def logout():
    log_out()
    return redirect(url_for("auth.login"))


@blueprint.route("/password", methods=["GET", "POST"])
@requires("own_account")
def password():
    if request.method == "GET":
        return render_template("password.html")
    new = request.form.get("new_password", "")
    if new != request.form.get("repeat_password", ""):
        return render_template("password.html", error="the two new passwords differ"), 400
    try:
        accounts.change_password(g.db, g.user["username"], request.form.get("password", ""),
                                 new, remote_addr=request.remote_addr or "")
    except AomasError as error:
        return render_template("password.html", error=str(error)), 400
    # The change ended every session of the account, this one too: log in with the new one.
    session.clear()
    flash("Password changed; log in with the new password.")
    return redirect(url_for("auth.login"))


def _safe_next(target: str) -> str:
    """``target`` if it is a path on this site, else "" (the worklist): never an open redirect.

    Browsers drop tabs and line breaks from a URL and read a backslash as a slash, so
    "/\t/evil.example" would go to //evil.example; a line break in a Location header is an
    error too. Such a target is refused outright rather than cleaned.
    """
    if any(ord(character) < 0x21 or ord(character) == 0x7F or character == "\\"
           for character in target):
        return ""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return ""
    return target
