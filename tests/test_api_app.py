"""The web app in the shape of Flask's flaskr tests: ``app.test_client()`` on a fresh data dir per
test, parametrised over the routes. Sessions, roles, CSRF and the document's promises are
checked here on every route; real processes stay for DICOM, crashes, the outbox and the browser
(tests/test_web_api.py keeps the checks that need a processed run or a real server)."""

from __future__ import annotations

import re
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest

from appliance.access.permissions import PERMISSIONS
from appliance.limits import MAX_TEXT_CHARS
from tests.conftest import ACCOUNTS, PASSWORD, WebApp, mask_from, png_of
from ui.openapi import document

# /metrics checks its caller itself: a monitoring address, or an admin's session.
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/healthz"), ("GET", "/metrics"),
          ("POST", "/api/v1/session"), ("GET", "/static/<path:filename>")}
# Path values that name nothing: every route is reached, none finds its object.
VALUES = {"run_id": "0" * 32, "tile_id": "1", "model_id": "no-such-model",
          "filename": "aomas.css", "name": "enface", "frame": "0", "alert_id": "1"}


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


def test_active_learning_queue_threshold_and_limit(web_app):
    web_app.seed_run()
    client, url = web_app.client("lena"), "/api/v1/active-learning/queue"
    everything = client.get(url, query_string={"uncertainty_threshold": 0}).get_json()["tiles"]
    assert len(everything) == 6
    # Ranked by the calibrated error probability the pipeline recorded for every tile.
    ranks = [t["error_probability"] for t in everything]
    assert None not in ranks and ranks == sorted(ranks, reverse=True)
    top = client.get(url, query_string={"uncertainty_threshold": 0, "limit": 3}).get_json()
    assert [t["tile_id"] for t in top["tiles"]] == [t["tile_id"] for t in everything[:3]]
    middle = ranks[3]
    above = client.get(url, query_string={"uncertainty_threshold": middle}).get_json()["tiles"]
    assert all(t["error_probability"] > middle for t in above) and len(above) == 3
    default = client.get(url).get_json()
    assert default["uncertainty_threshold"] == 0.3 and default["limit"] == 50
    assert client.get(url, query_string={"limit": 0}).status_code == 422
    assert client.get(url, query_string={"uncertainty_threshold": "high"}).status_code == 422
    # A labelled tile leaves the queue.
    first = everything[0]
    mask = mask_from(client.get(f"/api/v1/tiles/{first['tile_id']}").get_json())
    assert client.post("/api/v1/labels", json={"tile_id": first["tile_id"], "base_version": 0,
                                               "mask_png": png_of(~mask)}).status_code == 201
    after = client.get(url, query_string={"uncertainty_threshold": 0}).get_json()["tiles"]
    assert [t["tile_id"] for t in after] == [t["tile_id"] for t in everything[1:]]


def test_label_versions_diff_idempotency_conflicts_and_rollback(web_app):
    web_app.seed_run()
    lena, lars = web_app.client("lena"), web_app.client("lars")
    tile_id = web_app.db.execute("SELECT min(tile_id) FROM tiles").fetchone()[0]
    tile = lena.get(f"/api/v1/tiles/{tile_id}").get_json()
    assert tile["head_version"] == 0
    assert {"enface_png", "mask_png", "uncertainty_png"} == set(tile["images"])
    model_mask = mask_from(tile)
    assert model_mask.any() and not model_mask.all()
    edited = model_mask.copy()
    edited.flat[np.flatnonzero(~model_mask)[:12]] = True   # paint 12 pixels
    edited.flat[np.flatnonzero(model_mask)[:5]] = False    # erase 5
    body = {"tile_id": tile_id, "base_version": 0, "mask_png": png_of(edited),
            "comment": "two cones merged"}

    first = lena.post("/api/v1/labels", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201, first.get_data(True)
    assert first.get_json()["version"] == 1 and first.get_json()["diff"] == "+12 px \u22125 px"
    again = lena.post("/api/v1/labels", json=body, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200
    assert again.get_json()["label_id"] == first.get_json()["label_id"]
    other = lena.post("/api/v1/labels", headers={"Idempotency-Key": "k-1"},
                      json={**body, "mask_png": png_of(model_mask)})
    assert other.status_code == 409 and "Idempotency-Key" in other.get_json()["error"]
    stale = lars.post("/api/v1/labels", json={**body, "mask_png": png_of(model_mask)})
    assert stale.status_code == 409 and "version 1" in stale.get_json()["error"]
    wrong_size = lena.post("/api/v1/labels",
                           json={**body, "base_version": 1, "mask_png": png_of(edited[:8])})
    assert wrong_size.status_code == 422 and "pixels" in wrong_size.get_json()["error"]
    assert lena.post("/api/v1/labels",
                     json={**body, "mask_png": "aGVsbG8="}).status_code == 422
    too_long = lena.post("/api/v1/labels", json={**body, "base_version": 1,
                                                 "comment": "x" * (MAX_TEXT_CHARS + 1)})
    assert too_long.status_code == 422 and str(MAX_TEXT_CHARS) in too_long.get_json()["error"]
    assert mask_from(lena.get(f"/api/v1/tiles/{tile_id}").get_json()).tolist() == \
        edited.tolist()

    back = lena.post("/api/v1/labels/rollback", json={"tile_id": tile_id, "target_version": 0})
    assert back.status_code == 201, back.get_data(True)
    assert back.get_json()["version"] == 2 and back.get_json()["source_version"] == 0
    assert back.get_json()["diff"] == "+5 px \u221212 px"
    after = lena.get(f"/api/v1/tiles/{tile_id}").get_json()
    assert after["head_version"] == 2 and (mask_from(after) == model_mask).all()
    history = lena.get(f"/api/v1/tiles/{tile_id}/labels").get_json()
    assert [(v["version"], v["kind"], v["author"]) for v in history] == [
        (0, "model", "model"), (1, "edit", "lena"), (2, "rollback", "lena")]
    assert lena.post("/api/v1/labels/rollback",
                     json={"tile_id": tile_id, "target_version": 7}).status_code == 404
    assert lena.get("/api/v1/tiles/999999").status_code == 404

    events = web_app.client("admin").get("/api/v1/audit",
                                         query_string={"object_id": str(tile_id)}).get_json()
    assert [(e["actor"], e["action"], e["detail"]["version"]) for e in events] == [
        ("lena", "label.rollback", 2), ("lena", "label.edit", 1)]
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        web_app.db.execute("UPDATE labels SET author = 'x' WHERE tile_id = ?", [tile_id])
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        web_app.db.execute("DELETE FROM audit_events")


def test_login_logout_and_what_ends_a_session(web_app):
    from appliance.access import accounts

    web_app.client("rita")     # the account exists
    anonymous = web_app.client()
    wrong = anonymous.post("/api/v1/session",
                           json={"username": "rita", "password": "not it at all"})
    unknown = anonymous.post("/api/v1/session",
                             json={"username": "nobody", "password": "not it at all"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json() == unknown.get_json()   # says nothing about which accounts exist

    client = web_app.client("rita")
    cookie = client.get_cookie("aomas_session").value
    assert client.get("/api/v1/me").get_json()["role"] == "researcher"
    assert client.delete("/api/v1/session").status_code == 204
    replay = web_app.client()
    replay.set_cookie("aomas_session", cookie)
    assert replay.get("/api/v1/me").status_code == 401  # ended by the server: a copy is worthless

    client = web_app.client("rita")
    accounts.set_disabled(web_app.db, "rita", True, actor="test")
    assert client.get("/api/v1/me").status_code == 401
    refused = anonymous.post("/api/v1/session", json={"username": "rita", "password": PASSWORD})
    assert refused.status_code == 401
    accounts.set_disabled(web_app.db, "rita", False, actor="test")
    assert web_app.client("rita").get("/api/v1/me").status_code == 200
    actions = {row[0] for row in web_app.db.execute(
        "SELECT action FROM audit_events WHERE actor = 'rita' OR object_id = 'rita'")}
    assert {"session.login", "session.login_refused", "session.logout", "user.disable",
            "user.enable"} <= actions


def test_logins_are_rate_limited_per_account_and_address(web_app):
    web_app.client("rita")
    anonymous = web_app.client()
    for _ in range(5):
        answer = anonymous.post("/api/v1/session",
                                json={"username": "rita", "password": "wrong guess 123"})
        assert answer.status_code == 401
    locked = anonymous.post("/api/v1/session", json={"username": "rita", "password": PASSWORD})
    assert locked.status_code == 401 and "too many failed logins" in locked.get_json()["error"]
    web_app.client("carl")  # other accounts from the same address still log in
    elsewhere = web_app.client()
    elsewhere.environ_base["REMOTE_ADDR"] = "10.1.2.3"   # and the same account from elsewhere
    assert elsewhere.post("/api/v1/session",
                          json={"username": "rita", "password": PASSWORD}).status_code == 201
