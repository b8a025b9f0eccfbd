"""The review API against a running appliance (`aomas serve`, waitress) over loopback, on a
processed run: CSRF, headers and cookie flags as the server sends them, runs created and
retried, a password change on the page, where a login may lead, and a schema-driven fuzz run.
Sessions, roles and CSRF on every route, logins and what ends a session, the rate limit, the
active-learning queue and label versions are checked in process on a fresh data dir
(tests/test_api_app.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import requests

from tests.conftest import PASSWORD


def test_writes_need_the_csrf_token(review_box):
    client = review_box.login("lena")
    del client.headers["X-CSRF-Token"]
    tile_id = review_box.tiles()[0]["tile_id"]
    before = review_box.box.query("SELECT count(*) FROM labels")[0][0]
    answer = client.post(f"{review_box.url}/api/v1/labels/rollback",
                         json={"tile_id": tile_id, "target_version": 0}, timeout=30)
    assert answer.status_code == 400 and "CSRF" in answer.json()["error"]
    form = client.post(f"{review_box.url}/logout", allow_redirects=False, timeout=30)
    assert form.status_code == 400
    assert review_box.box.query("SELECT count(*) FROM labels")[0][0] == before


def test_security_headers_and_cookie_flags(review_box):
    login_page = requests.get(f"{review_box.url}/login", timeout=30)
    headers = login_page.headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Server"] == "AOMAS"
    answer = requests.post(f"{review_box.url}/api/v1/session",
                           json={"username": "carl", "password": PASSWORD}, timeout=30)
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # web.secure_cookies is off: this box serves plain http


def test_runs_create_and_retry(review_box):
    url = review_box.url
    mia = review_box.login("mia")
    run = mia.get(f"{url}/api/v1/runs/{review_box.run_id}").json()
    same = mia.post(f"{url}/api/v1/runs", json={"case_id": run["case_id"]})
    assert same.status_code == 200 and same.json()["run_id"] == review_box.run_id
    assert mia.post(f"{url}/api/v1/runs", json={"case_id": 424242}).status_code == 404
    assert mia.post(f"{url}/api/v1/runs", json={"case_id": "one"}).status_code == 422
    assert mia.post(f"{url}/api/v1/runs", data="case", headers={
        "Content-Type": "text/plain"}).status_code == 422
    retry = mia.post(f"{url}/api/v1/runs/{review_box.run_id}/retry")
    assert retry.status_code == 409 and "SUCCEEDED" in retry.json()["error"]
    listed = mia.get(f"{url}/api/v1/runs", params={"state": "SUCCEEDED"}).json()
    assert review_box.run_id in [r["run_id"] for r in listed]
    # The worker noted each stage as it went (the worklist shows it while RUNNING).
    summary = next(r for r in listed if r["run_id"] == review_box.run_id)
    assert summary["stage"] == "dicom_outputs"
    assert summary["started_at"] <= summary["stage_started_at"] <= summary["finished_at"]
    assert mia.get(f"{url}/api/v1/runs", params={"state": "DONE"}).status_code == 422


def test_openapi_document_survives_a_schema_driven_fuzz_run(review_box, tmp_path):
    """Fuzzed requests get no 500, and every answer matches its schema in the document."""
    admin = review_box.login("admin")
    document = admin.get(f"{review_box.url}/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert {"/api/v1/labels", "/api/v1/labels/rollback", "/api/v1/active-learning/queue",
            "/api/v1/tiles/{tile_id}", "/api/v1/runs"} <= set(document["paths"])
    schema = tmp_path / "openapi.json"
    schema.write_text(admin.get(f"{review_box.url}/api/v1/openapi.json").text)
    cookie = f"aomas_session={admin.cookies.get('aomas_session')}"
    # The session routes are left out: fuzzing logins would lock this address out, and
    # DELETE would end the session the run uses.
    result = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", str(schema),
         "--url", review_box.url, "--checks", "not_a_server_error,response_schema_conformance",
         "--exclude-path", "/api/v1/session",
         # A valid request starts an hours-long training (tests/test_retraining.py checks it).
         "--exclude-path", "/api/v1/models/train-from-reviews",
         "--max-examples", "15", "--seed", "1",
         "-H", f"Cookie: {cookie}", "-H", f"X-CSRF-Token: {admin.headers['X-CSRF-Token']}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache stays there
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert admin.get(f"{review_box.url}/api/v1/me").status_code == 200


def test_password_change_on_the_page_ends_the_old_sessions(review_box):
    box, url = review_box.box, review_box.url
    box.aomas("user", "add", "pat", "--role", "researcher", "--password-file",
              str(box.root / "password"))
    page_session, other_session = review_box.login("pat"), review_box.login("pat")
    page = page_session.get(f"{url}/password").text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    new_password = "a new long password 42"
    answer = page_session.post(f"{url}/password", allow_redirects=False, data={
        "csrf_token": token, "password": PASSWORD, "new_password": new_password,
        "repeat_password": new_password})
    assert answer.status_code == 302 and answer.headers["Location"] == "/login"
    assert other_session.get(f"{url}/api/v1/me").status_code == 401
    assert requests.post(f"{url}/api/v1/session", json={"username": "pat",
                         "password": PASSWORD}, timeout=30).status_code == 401
    assert review_box.login("pat", new_password).get(f"{url}/api/v1/me").status_code == 200
    assert box.query("SELECT count(*) FROM audit_events WHERE actor = 'pat' AND "
                     "action = 'user.password_change'")[0][0] == 1


OFF_SITE_NEXT = ["/\t/evil.example", "/\n/evil.example", "/\r/evil.example", "//evil.example",
                 "/\\evil.example", "https://evil.example/", " /\t/evil.example",
                 "/ok\r\nSet-Cookie: x=1", "javascript:alert(1)", "\x7f/evil"]


def test_login_goes_only_to_a_path_on_this_site(review_box):
    # Browsers drop tabs and line breaks and read "\" as "/": each of these would leave the site
    # (or, with a line break in Location, fail) if taken as it came.
    for target in [*OFF_SITE_NEXT, "/runs/1?tab=cones"]:
        client = requests.Session()
        form = client.get(review_box.url + "/login", params={"next": target}, timeout=30)
        assert form.status_code == 200, (target, form.status_code)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        answer = client.post(review_box.url + "/login", allow_redirects=False, timeout=30,
                             data={"username": "lena", "password": PASSWORD, "next": target,
                                   "csrf_token": token})
        assert answer.status_code == 302, (target, answer.status_code)
        expected = target if target == "/runs/1?tab=cones" else "/"
        assert answer.headers["Location"] == expected, (target, answer.headers["Location"])
