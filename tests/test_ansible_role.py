"""The Ansible role run for real on this machine (connection local) into a scratch root:
install, a second run that changes nothing, an update to a second release (backup, install
side by side, migrate, `current` switched, doctor gate) and a rollback (previous release, the
pre-update backup restored). No systemd runs here, so the role checks its units with
`systemd-analyze verify` instead of starting them; then HTTPS is tried for real: nginx from
the role's site in front of the installed release's `aomas web`, a real client over TLS."""

from __future__ import annotations

import getpass
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from appliance.demo.pacs import free_port
from tests.conftest import need, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "ansible" / "site.yml"
RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


class Scratch:
    """A root of its own for everything the role writes."""

    def __init__(self, root: Path, pki: Path):
        self.root = root
        self.install_dir, self.data_dir = root / "opt" / "aomas", root / "var" / "lib" / "aomas"
        self.config_dir, self.backup_dir = root / "etc" / "aomas", root / "var" / "backups"
        self.systemd_dir, self.nginx_dir = root / "etc" / "systemd", root / "etc" / "nginx"
        self.systemd_dir.mkdir(parents=True)
        self.nginx_dir.mkdir(parents=True)
        self.web_port, self.https_port = free_port(), free_port()
        self.inventory = root / "inventory.ini"
        # Connection local as the user running the tests; no sudo, so no become.
        self.inventory.write_text(
            "[aomas]\nlocalhost ansible_connection=local ansible_become=false "
            f"ansible_python_interpreter={sys.executable}\n")
        self.variables = {
            "aomas_install_dir": str(self.install_dir), "aomas_data_dir": str(self.data_dir),
            "aomas_config_dir": str(self.config_dir), "aomas_systemd_dir": str(self.systemd_dir),
            "aomas_backup_dir": str(self.backup_dir), "aomas_nginx_sites_dir": str(self.nginx_dir),
            "aomas_user": getpass.getuser(), "aomas_create_user": False,
            # nginx and restic come with `make system-packages`; no apt here.
            "aomas_manage_packages": False, "aomas_source_dir": str(ROOT),
            "aomas_settings": {"dicom": {"port": 104, "allowed_calling_aes": ["SCANNER1"]},
                               "web": {"port": self.web_port},
                               "worker": {"run_deadline_seconds": 1800.0}},
            "aomas_destinations": [{"name": "pacs", "kind": "dimse", "ae_title": "PACS",
                                    "host": "10.0.0.5", "port": 104}],
            "aomas_https_certificate": str(pki / "box.crt"),
            "aomas_https_private_key": str(pki / "box.key"),
            "aomas_https_port": self.https_port, "aomas_http_redirect_port": 0,
        }

    def play(self, **overrides) -> tuple[dict[str, int], str]:
        variables = self.root / "vars.json"
        variables.write_text(json.dumps({**self.variables, **overrides}))
        ansible = Path(sys.executable).with_name("ansible-playbook")
        result = subprocess.run(
            [str(ansible), "-i", str(self.inventory), "-e", f"@{variables}", str(PLAYBOOK)],
            capture_output=True, text=True, timeout=900,
            env={"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PATH": os.environ["PATH"],
                 "HOME": str(self.root), "ANSIBLE_LOCAL_TEMP": str(self.root / "tmp")})
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        ok, changed, unreachable, failed = map(int, RECAP.search(output).groups())
        return {"ok": ok, "changed": changed, "failed": failed}, output

    def aomas(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.install_dir / "current" / "venv" / "bin" / "aomas"),
                               *args], capture_output=True, text=True, timeout=120,
                              env={"AOMAS_CONFIG": str(self.config_dir / "aomas.toml"),
                                   "PATH": os.environ["PATH"]})


def test_install_again_update_and_roll_back_into_a_scratch_root(tmp_path, pki):
    scratch = Scratch(tmp_path, pki)
    first, output = scratch.play(aomas_release="r1")
    assert first["changed"] > 0

    # What was installed: releases side by side, `current`, the configuration rendered from
    # the settings map (and only it), the units from the role's variables.
    current = scratch.install_dir / "current"
    assert current.is_symlink() and current.resolve().name == "r1"
    effective = json.loads(scratch.aomas("config", "--json").stdout)
    assert effective["dicom"]["port"] == 104
    assert effective["dicom"]["allowed_calling_aes"] == ["SCANNER1"]
    assert effective["dicom"]["series_idle_seconds"] == 10.0      # the code's default
    assert effective["web"]["secure_cookies"] is True and effective["web"]["trusted_proxy"]
    assert effective["destinations"][0]["host"] == "10.0.0.5"
    assert str(effective["appliance"]["data_dir"]) == str(scratch.data_dir)
    scp_unit = (scratch.systemd_dir / "aomas-scp.service").read_text()
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in scp_unit          # port 104
    assert f"ExecStart={scratch.install_dir}/current/venv/bin/aomas scp" in scp_unit
    assert f"User={getpass.getuser()}" in scp_unit
    worker_unit = (scratch.systemd_dir / "aomas-worker.service").read_text()
    assert "TimeoutStopSec=1860" in worker_unit                            # deadline + 60
    assert f"{scratch.backup_dir} --keep 7" in (scratch.systemd_dir /
                                                "aomas-backup.service").read_text()
    # The generated admin password: a 0600 file, never in Ansible's output.
    password_file = scratch.config_dir / "admin-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 20 and password not in output
    assert (scratch.config_dir / "aomas.toml").stat().st_mode & 0o777 == 0o640
    assert scratch.data_dir.stat().st_mode & 0o777 == 0o750

    # Idempotent: the same play again changes nothing.
    second, _ = scratch.play(aomas_release="r1")
    assert second["changed"] == 0, second

    # Some data, then an update: backup, r2 beside r1, `current` switched, doctor gate.
    assert scratch.aomas("user", "add", "lena", "--role", "labeler", "--password-file",
                         str(password_file)).returncode == 0
    update, output = scratch.play(aomas_release="r2")
    assert update["changed"] > 0
    assert current.resolve().name == "r2"
    assert (scratch.install_dir / "releases" / "r1" / "installed").is_file()
    record = json.loads((current / "update-from.json").read_text())
    assert record["previous_release"] == "r1"
    assert Path(record["backup"]).parent == scratch.backup_dir / "snapshots"
    assert "Run aomas doctor until it passes" in output

    # What arrives after the update is kept aside by a rollback, never deleted.
    assert scratch.aomas("user", "add", "late", "--role", "labeler", "--password-file",
                         str(password_file)).returncode == 0
    rollback, _ = scratch.play(aomas_release="r2", aomas_action="rollback")
    assert rollback["changed"] > 0
    assert current.resolve().name == "r1"
    users = scratch.aomas("user", "list").stdout
    assert "lena" in users and "late" not in users
    aside = list(scratch.data_dir.parent.glob("aomas.rolled-back-from-r2-*"))
    assert len(aside) == 1 and (aside[0] / "aomas.db").is_file()
    assert "audit log intact" in scratch.aomas("audit", "verify").stdout

    # HTTPS for real: nginx with the role's site in front of the installed `aomas web`.
    _https_through_nginx(scratch, pki, password)


def _https_through_nginx(scratch: Scratch, pki: Path, password: str) -> None:
    prefix = scratch.root / "nginx"
    (prefix / "logs").mkdir(parents=True)
    site = scratch.nginx_dir / "aomas.conf"
    (prefix / "nginx.conf").write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\n"
        "events {}\nhttp {\n"
        f"  access_log {prefix}/logs/access.log;\n"
        f"  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n"
        f"  fastcgi_temp_path {prefix}/fastcgi;\n  uwsgi_temp_path {prefix}/uwsgi;\n"
        f"  scgi_temp_path {prefix}/scgi;\n  include {site};\n}}\n")
    nginx = subprocess.Popen([need("nginx"), "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                              "-g", "daemon off;"], stderr=subprocess.PIPE, text=True)
    web = subprocess.Popen([str(scratch.install_dir / "current" / "venv" / "bin" / "aomas"),
                            "web"], env={"AOMAS_CONFIG": str(scratch.config_dir / "aomas.toml"),
                                         "PATH": os.environ["PATH"]},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{scratch.web_port}/healthz")
        url = f"https://localhost:{scratch.https_port}"
        ca = str(pki / "site-ca.crt")
        deadline = time.monotonic() + 15
        while True:
            try:
                health = requests.get(f"{url}/healthz", verify=ca, timeout=5)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or nginx.poll() is not None:
                    raise
                time.sleep(0.2)
        assert health.status_code == 200
        assert health.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        session = requests.Session()
        login = session.post(f"{url}/api/v1/session", json={"username": "admin",
                                                            "password": password},
                             verify=ca, timeout=10)
        assert login.status_code == 201, login.text
        cookie = login.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie
        # The appliance sees the client's own address through the proxy: one on loopback
        # but not the proxy's may not read /metrics without a session.
        context = ssl.create_default_context(cafile=ca)
        connection = http.client.HTTPSConnection("localhost", scratch.https_port,
                                                 context=context,
                                                 source_address=("127.0.0.2", 0), timeout=10)
        connection.request("GET", "/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
        assert connection.getresponse().status in (401, 403)
        # Plain HTTP on the HTTPS port never reaches the appliance.
        plain = requests.get(f"http://localhost:{scratch.https_port}/healthz", timeout=5)
        assert plain.status_code == 400 and "components" not in plain.text
    finally:
        for process in (web, nginx):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
        shutil.rmtree(prefix, ignore_errors=True)


def test_the_role_documents_its_variables_and_renders_only_the_settings_map():
    """The settings map stays generic: no per-key variable repeats a default of the code."""
    defaults = yaml.safe_load((ROOT / "ansible/roles/aomas/defaults/main.yml").read_text())
    assert defaults["aomas_settings"] == {}
    from appliance.config import SETTINGS
    per_key = {f"aomas_{s.key}" for s in SETTINGS} | {f"aomas_{s.section}_{s.key}"
                                                     for s in SETTINGS}
    # Two names the role owns: the data dir (the units need it too) and the [gpu] extra.
    owned = {"aomas_data_dir", "aomas_gpu"}
    assert not (per_key & set(defaults)) - owned, per_key & set(defaults)
