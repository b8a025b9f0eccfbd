"""Deployment files are code: the systemd units the role renders verify and are hardened; the
Ansible role parses, documents every variable and renders a configuration the appliance
accepts. (tests/test_ansible_role.py runs the role for real.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

from appliance.config import SETTINGS, load_config
from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "ansible" / "roles" / "aomas"
SERVICES = ["aomas-scp.service", "aomas-web.service", "aomas-worker.service",
            "aomas-backup.service"]
UNITS = [*SERVICES, "aomas.target", "aomas-backup.timer"]


def effective_settings(path: Path | None = None) -> dict:
    config = load_config(str(path) if path else None, environ={})
    return {section: vars(getattr(config, section)) for section in {s.section for s in SETTINGS}}


def render(template: str, **variables) -> str:
    """A role template as Ansible renders it (trim_blocks; its filters and tests used here)."""
    environment = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True,
                                     undefined=jinja2.StrictUndefined)
    environment.filters["to_json"] = json.dumps
    environment.filters["basename"] = os.path.basename
    environment.tests["match"] = lambda value, pattern: re.match(pattern, value) is not None
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values = {k: v for k, v in defaults.items() if not (isinstance(v, str) and "{{" in v)}
    values["aomas_effective"] = effective_settings()
    values.update(variables)
    return environment.from_string((ROLE / "templates" / template).read_text()).render(**values)


def service_section(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("["):
            inside = line == "[Service]"
        elif inside and line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_rendered_units_pass_systemd_analyze_verify(tmp_path):
    for unit in UNITS:
        (tmp_path / unit).write_text(render(f"{unit}.j2"))
    result = subprocess.run([need("systemd-analyze"), "verify",
                             *(str(tmp_path / unit) for unit in UNITS)],
                            capture_output=True, text=True)
    # The binary only exists on an installed box; everything else must be clean.
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "is not executable" not in line]
    assert problems == []


@pytest.mark.parametrize("unit", SERVICES)
def test_units_are_hardened_and_sorted(unit):
    lines = service_section(render(f"{unit}.j2"))
    keys = [line.split("=", 1)[0] for line in lines]
    assert keys == sorted(keys), "keep [Service] keys sorted, so a missing one stands out"
    for required in ("NoNewPrivileges=yes", "ProtectSystem=strict", "User=aomas",
                     "CapabilityBoundingSet=", "ReadWritePaths=/var/lib/aomas", "UMask=0027",
                     "ProtectKernelLogs=yes", "ProtectClock=yes", "ProtectHostname=yes",
                     "PrivateMounts=yes", "RemoveIPC=yes", "SystemCallErrorNumber=EPERM"):
        assert any(line.startswith(required) for line in lines), f"{unit} lacks {required}"
    assert any(line.startswith("ExecStart=/opt/aomas/current/venv/bin/aomas ")
               for line in lines)
    assert "KillSignal=SIGINT" not in lines


def test_the_scp_may_bind_a_low_port_only_when_it_listens_on_one(tmp_path):
    plain = service_section(render("aomas-scp.service.j2"))
    assert "CapabilityBoundingSet=" in plain and not any("CAP_NET" in line for line in plain)
    config = tmp_path / "aomas.toml"
    config.write_text("[dicom]\nport = 104\n")
    low = service_section(render("aomas-scp.service.j2",
                                 aomas_effective=effective_settings(config)))
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in low
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in low


def test_the_worker_waits_for_a_run_as_long_as_its_deadline():
    lines = service_section(render("aomas-worker.service.j2"))
    deadline = effective_settings()["worker"]["run_deadline_seconds"]
    assert f"TimeoutStopSec={int(deadline) + 60}" in lines


def test_state_directory_only_where_systemd_can_make_it():
    assert "StateDirectory=aomas" in service_section(render("aomas-web.service.j2"))
    elsewhere = render("aomas-web.service.j2", aomas_data_dir="/srv/aomas")
    assert "StateDirectory" not in elsewhere and "ReadWritePaths=/srv/aomas" in elsewhere


def test_playbook_syntax():
    ansible = Path(sys.executable).with_name("ansible-playbook")
    result = subprocess.run([str(ansible), "-i", "localhost,", "--syntax-check", "site.yml"],
                            cwd=ROOT / "ansible", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_role_variable_is_typed_and_documented():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    assert all(o.get("description") and o.get("type") for o in options.values())


def test_the_rendered_configuration_is_accepted(tmp_path):
    settings = {"appliance": {"data_dir": "/var/lib/aomas"},
                "dicom": {"allowed_calling_aes": ["SCANNER1"], "port": 104,
                          "tls_certificate": "/etc/aomas/box.crt"},
                "alerts": {"webhook_urls": ["https://alerts.example/hook"]},
                "web": {"secure_cookies": True, "session_idle_minutes": 15.5}}
    path = tmp_path / "aomas.toml"
    path.write_text(render("aomas.toml.j2", aomas_rendered_settings=settings,
                           aomas_destinations=[{"name": "pacs", "kind": "dimse",
                                                "ae_title": "PACS", "host": "10.0.0.5",
                                                "port": 104, "tls": True,
                                                "tls_ca_certificates": "/etc/aomas/ca.pem"}]))
    config = load_config(str(path), environ={})
    assert config.dicom.allowed_calling_aes == ["SCANNER1"] and config.dicom.port == 104
    assert config.alerts.webhook_urls == ["https://alerts.example/hook"]
    assert config.web.secure_cookies is True and config.web.session_idle_minutes == 15.5
    assert config.destinations[0]["port"] == 104 and config.destinations[0]["tls"] is True
    assert config.dicom.series_idle_seconds == 10.0     # not rendered: the code's default
    assert str(config.data_dir) == "/var/lib/aomas"
