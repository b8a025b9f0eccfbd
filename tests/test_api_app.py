"""The web app in the shape of Flask's flaskr tests: ``app.test_client()`` on a fresh data dir per
test, parametrised over the routes. Sessions, roles, CSRF and the document's promises are
checked here on every route; real processes stay for DICOM, crashes, the outbox and the browser
(tests/test_web_api.py keeps the checks that need a processed run or a real server)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from appliance.access.permissions import PERMISSIONS
from tests.conftest import ACCOUNTS, WebApp
from ui.openapi import document

PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/healthz"),
          ("POST", "/api/v1/session"), ("GET", "/static/<path:filename>")}
# Path values that name nothing: every route is reached, none finds its object.
VALUES = {"run_id": "0" * 32, "tile_id": "1", "filename": "aomas.css", "name": "enface",
          "frame": "0"}


def app_routes(app) -> list[tuple[str, str, str, object]]:
    """(method, concrete path, rule, view) for every route of the app."""
    found = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: VALUES[m.group(1)], rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, path, rule.rule, app.view_functions[rule.endpoint]))
    return found


_LISTING = tempfile.TemporaryDirectory()   # an app only to list its routes at collection
ROUTES = app_routes(WebApp(Path(_LISTING.name)).app)
GUARDED = [(m, p, r, v) for m, p, r, v in ROUTES if (m, r) not in PUBLIC]


def route_id(route) -> str:
    return f"{route[0]} {route[2]}"


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_only_the_public_routes_are_marked_public(route):
    method, _, rule, view = route
    marked = getattr(view, "public", False) or rule.startswith("/static/")
    assert marked == ((method, rule) in PUBLIC)


@pytest.mark.parametrize("route", GUARDED, ids=route_id)
def test_a_guarded_route_without_a_session_is_refused(web_app, route):
    method, path, _, _ = route
    answer = web_app.client().open(path, method=method, json={})
    if path.startswith("/api/"):
        assert answer.status_code == 401 and "log in" in answer.get_json()["error"]
    else:
        assert answer.status_code == 302
        assert answer.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("route", [r for r in GUARDED if r[3].__name__ != "logout"],
                         ids=route_id)
def test_each_role_is_refused_where_its_permissions_end(web_app, route):
    method, path, _, view = route
    permission = getattr(view, "permission", None)
    assert permission in PERMISSIONS, f"{route_id(route)} names no permission"
    for username, role in ACCOUNTS.items():
        answer = web_app.client(username).open(path, method=method, json={})
        if role in PERMISSIONS[permission]:
            # A 403 may still come for the person (e.g. a blind rater), never for the role.
            assert not (answer.status_code == 403 and "your role" in answer.get_data(True)), \
                (username, answer.get_data(True))
        else:
            assert answer.status_code == 403, (username, answer.status_code)
            assert f"your role ({role})" in answer.get_data(True)


@pytest.mark.parametrize("route", [r for r in GUARDED if r[0] != "GET"], ids=route_id)
def test_a_write_without_the_csrf_token_is_refused(web_app, route):
    method, path, _, _ = route
    client = web_app.client("admin")
    del client.environ_base["HTTP_X_CSRF_TOKEN"]
    answer = client.open(path, method=method, json={})
    assert answer.status_code == 400 and "CSRF" in answer.get_data(True)


TILE_ROUTES = [r for r in GUARDED if "<int:tile_id>" in r[2]]


@pytest.mark.parametrize("route", TILE_ROUTES, ids=route_id)
@pytest.mark.parametrize("tile_id", ["1", str(2**63), "195015717843372081152000"])
def test_a_tile_that_does_not_exist_is_404_whatever_its_number(web_app, route, tile_id):
    """A tile id beyond SQLite's integers used to answer 500 on the decision route."""
    method, _, rule, _ = route
    path = rule.replace("<int:tile_id>", tile_id)
    body = {"choice": "first", "mask_png": ""} if method == "POST" else None
    answer = web_app.client("admin").open(path, method=method, json=body)
    if rule.endswith("adjudication") and method == "GET":
        assert answer.status_code in (200, 404)   # "no adjudication" for a tile id is null
    else:
        assert answer.status_code in (404, 422), (path, answer.get_data(True))


def test_the_documents_paths_are_the_apps_routes(web_app):
    documented = {(method.upper(), path) for path, operations in document()["paths"].items()
                  for method in operations}
    served = {(method, re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule))
              for method, _, rule, _ in ROUTES if rule.startswith("/api/")}
    assert documented == served


def test_every_answer_with_a_body_has_a_schema():
    missing = [(method, path, code) for path, operations in document()["paths"].items()
               for method, operation in operations.items()
               for code, answer in operation["responses"].items()
               if code.startswith("2") and code != "204" and "content" not in answer]
    assert missing == []
