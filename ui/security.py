"""Who may see what: the session's account, role checks, CSRF, cookie flags, response headers.

Every route needs a logged-in account with the permission it names (``requires``), except the
few marked ``public`` (the login page and its API twin, /healthz, static files). Pages answer a
missing session with a redirect to /login, the API with 401 JSON; a wrong role gets 403.

A request body may be 64 MiB; a route marked ``takes_large_bodies`` (the DICOM upload) takes up
to the ``web.max_upload_mb`` setting, which waitress enforces too (``ui.server``). Beyond it the
answer is 413 before the body is read.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from flask import (
    Flask,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFProtect

from appliance.access import sessions
from appliance.access.permissions import allowed

csrf = CSRFProtect()

# JSON bodies, label masks, login forms: far below this.
MAX_REQUEST_BYTES = 64 * 2**20

# 'self' only: no inline script or style, so injected markup cannot run.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def secret_key(data_dir: Path) -> bytes:
    """The key that signs session cookies: made once, kept in the data dir, readable by the
    appliance's user only, shared by every web worker (so a restart keeps people logged in)."""
    path = data_dir / "web-secret.key"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(descriptor, "wb") as f:
        f.write(os.urandom(32))
        f.flush()
        os.fsync(f.fileno())
    return path.read_bytes()


def configure(app: Flask, web_settings, data_dir: Path) -> None:
    app.config.update(
        SECRET_KEY=secret_key(data_dir),
        SESSION_COOKIE_NAME="aomas_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=web_settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=web_settings.session_idle_minutes),
        # The token lives as long as the session; the server ends sessions itself.
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_HEADERS=["X-CSRF-Token", "X-CSRFToken"],
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        AOMAS_MAX_UPLOAD_BYTES=web_settings.max_upload_mb * 2**20,
    )
    # Both before CSRF: a stranger hears 401, not "bad token", and CSRF reads the form, whose
    # size limit must be set by then.
    app.before_request(_limit_body)
    app.before_request(_load_account)
    csrf.init_app(app)
    app.after_request(_add_headers)


def public(view: Callable) -> Callable:
    """Reachable without a session."""
    view.public = True
    return view


def takes_large_bodies(view: Callable) -> Callable:
    """The route takes bodies up to ``web.max_upload_mb`` instead of 64 MiB."""
    view.takes_large_bodies = True
    return view


def requires(permission: str) -> Callable:
    """The route needs a session whose role has ``permission``."""
    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not allowed(g.user["role"], permission):
                return refuse(403, f"your role ({g.user['role']}) may not do this")
            return view(*args, **kwargs)
        wrapper.permission = permission
        return wrapper
    return decorate


def wants_json() -> bool:
    return request.path.startswith("/api/")


def refuse(status: int, message: str):
    if wants_json():
        return jsonify(error=message), status
    return render_template("error.html", status=status, message=message), status


def route_takes_large_bodies() -> bool:
    """Whether this request's route is marked ``takes_large_bodies``."""
    view = current_app.view_functions.get(request.endpoint)
    return getattr(view, "takes_large_bodies", False)


def _limit_body():
    if route_takes_large_bodies():
        request.max_content_length = current_app.config["AOMAS_MAX_UPLOAD_BYTES"]


def _load_account():
    g.user = None
    session_id = session.get("session_id")
    if session_id:
        g.user = sessions.current_user(
            g.db, session_id, idle_seconds=current_app.config["AOMAS_IDLE_SECONDS"])
        if g.user is None:
            session.clear()
    view = current_app.view_functions.get(request.endpoint)
    if view is None or request.endpoint == "static" or getattr(view, "public", False):
        return None  # no such route (404 follows), the page's CSS and scripts, or public
    if g.user is None:
        if wants_json():
            return jsonify(error="log in first: POST /api/v1/session"), 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if not hasattr(view, "permission"):
        # A route without a permission is a programming error; refuse rather than expose it.
        return refuse(403, "this route declares no permission")
    return None


def _add_headers(response):
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")  # patient data: no caching
    if current_app.config["SESSION_COOKIE_SECURE"]:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response
