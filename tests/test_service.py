"""The whole box as an admin sees it: health over HTTP, doctor, the CLI, a Redis queue."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
import urllib.request

from tests.conftest import free_port, need, storescu


def get_json(url: str, timeout: float = 20) -> tuple[int, dict]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_healthz_and_doctor_report_each_component(box):
    box.aomas("init", "--admin-password-file", str(write(box.root / "pw", "correct horse 12")))
    box.start()
    status, health = get_json(f"http://127.0.0.1:{box.web_port}/healthz")
    assert status == 200
    assert set(health["components"]) == {"db", "queue", "scp", "disk"}
    assert health["ok"] is True, health
    assert health["components"]["db"]["journal_mode"] == "wal"
    doctor = json.loads(box.aomas("doctor", "--json").stdout)
    assert doctor["components"]["scp"]["ok"] is True
    # Another address, without a session, learns only whether the box is healthy.
    connection = http.client.HTTPConnection("127.0.0.1", box.web_port, timeout=10,
                                            source_address=("127.0.0.2", 0))
    connection.request("GET", "/healthz")
    answer = connection.getresponse()
    assert answer.status == 200 and json.loads(answer.read()) == {"ok": True}
    connection.close()

    box.stop_all()
    stopped = box.aomas("doctor", check=False)
    assert stopped.returncode == 1
    assert "scp: FAIL" in stopped.stdout


def test_init_is_safe_to_repeat_and_audited(box):
    first = box.aomas("init")
    assert "password (shown once)" in first.stdout
    again = box.aomas("init")
    assert "already exists" in again.stdout
    users = box.query("SELECT username, role, password_hash FROM users")
    assert [(u["username"], u["role"]) for u in users] == [("admin", "admin")]
    assert users[0]["password_hash"].startswith("scrypt$")
    assert box.query("SELECT count(*) FROM audit_events WHERE action = 'user.create'")[0][0] == 1


def test_demo_against_a_running_appliance(box):
    box.start()
    demo = box.aomas("demo", timeout=300)
    assert "SUCCEEDED" in demo.stdout
    assert '"shape"' in demo.stdout
    listed = json.loads(box.aomas("runs", "list", "--json").stdout)
    assert [r["state"] for r in listed] == ["SUCCEEDED"]
    shown = box.aomas("runs", "show", listed[0]["run_id"]).stdout
    assert "input_sha256" in shown


def test_serve_demo_ends_with_the_results_in_a_local_orthanc(make_box):
    # A configured PACS must not receive a synthetic study: the demo PACS replaces it.
    box = make_box(destinations=[{"name": "clinic", "host": "127.0.0.1", "port": 9}])
    box.start("serve", "--demo")
    deadline = time.monotonic() + 300
    while "demo done" not in box.log() and "demo failed" not in box.log():
        assert time.monotonic() < deadline, box.log()[-3000:]
        time.sleep(0.5)
    log = box.log()
    assert "demo done" in log, log[-3000:]
    assert "configured destination(s) are not used" in log
    page = re.search(r"SEG and SR in the demo PACS: (http://\S+)#study\?uuid=(\S+)", log)
    assert page, log[-3000:]
    base = page.group(1).removesuffix("/app/explorer.html")
    with urllib.request.urlopen(f"{base}/studies/{page.group(2)}/series?expand") as answer:
        series = json.loads(answer.read())
    assert sorted(s["MainDicomTags"]["Modality"] for s in series) == \
        ["OPT", "OPT", "OPT", "SEG", "SEG", "SR"]  # derived OPT, 2 en-face, 2 SEG, SR
    assert {row["destination"] for row in box.query("SELECT * FROM outbox")} == {"demo-pacs"}
    assert (box.data_dir / "demo-pacs" / "orthanc.json").is_file()


def test_runs_show_of_an_unknown_run_says_what_to_do(box):
    result = box.aomas("runs", "show", "nope", check=False)
    assert result.returncode == 1
    assert "aomas runs list" in result.stderr


def test_the_queue_can_live_in_redis(make_box, tmp_path, studies):
    port = free_port()
    redis = subprocess.Popen([need("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL)
    try:
        box = make_box(queue__backend="redis", queue__redis_url=f"redis://127.0.0.1:{port}/0")
        box.start("scp")
        box.start("worker")
        study = studies["multiframe"]
        assert storescu(box.dicom_port, study["dir"]).returncode == 0
        run = box.wait_for_run(study["series_instance_uid"])
        assert run["state"] == "SUCCEEDED"
        assert "backend: redis" in box.log()
    finally:
        redis.terminate()
        redis.wait(timeout=10)


def write(path, text):
    path.write_text(text)
    return path


def test_the_commit_is_read_without_writing_the_repository(tmp_path):
    from appliance import version

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t",
                               "-c", "user.email=t@t", *args], check=True,
                              capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "tracked.txt").write_text("a\n")
    git("add", "tracked.txt")
    git("commit", "-qm", "one")
    index = tmp_path / ".git" / "index"

    def index_rewritten_by(read) -> bool:
        time.sleep(1.1)                        # past the index's own timestamp (racy git)
        (tmp_path / "tracked.txt").touch()     # stat changed, content not: a refresh is due
        before = index.stat().st_mtime_ns
        read()
        return index.stat().st_mtime_ns != before

    # Control: a plain `git status` rewrites the index (and takes .git/index.lock to do so) ...
    assert index_rewritten_by(lambda: git("status", "--porcelain"))
    # ... reading the commit the way the appliance does at every start does not.
    assert not index_rewritten_by(lambda: version._git_commit(tmp_path))
    assert version._git_commit(tmp_path) == git("rev-parse", "HEAD").strip()
