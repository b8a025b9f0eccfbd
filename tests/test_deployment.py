"""Deployment files are code: the systemd units verify and are hardened; the Ansible role
parses, documents every variable and renders a configuration the appliance accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

from appliance.config import load_config
from tests.conftest import need

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "systemd").glob("*.service"))
ROLE = ROOT / "ansible" / "roles" / "aomas"


def service_section(unit: Path) -> list[str]:
    lines, inside = [], False
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            inside = line == "[Service]"
        elif inside and line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_units_pass_systemd_analyze_verify():
    result = subprocess.run([need("systemd-analyze"), "verify", *map(str, UNITS)],
                            capture_output=True, text=True)
    # The binary only exists on an installed box; everything else must be clean.
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "is not executable" not in line]
    assert problems == []


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_are_hardened_and_sorted(unit):
    lines = service_section(unit)
    keys = [line.split("=", 1)[0] for line in lines]
    assert keys == sorted(keys), "keep [Service] keys sorted, so a missing one stands out"
    for required in ("NoNewPrivileges=yes", "ProtectSystem=strict", "User=aomas",
                     "CapabilityBoundingSet=", "ReadWritePaths=/var/lib/aomas"):
        assert required in lines, f"{unit.name} lacks {required}"
    assert any(line.startswith("ExecStart=/opt/aomas/venv/bin/aomas ") for line in lines)


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
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables["aomas_allowed_calling_aes"] = ["SCANNER1"]
    variables["aomas_destinations"] = [{"name": "pacs", "kind": "dimse", "ae_title": "PACS",
                                        "host": "10.0.0.5", "port": 104}]
    environment = jinja2.Environment(keep_trailing_newline=True)
    environment.filters["to_json"] = json.dumps
    template = environment.from_string((ROLE / "templates" / "aomas.toml.j2").read_text())
    path = tmp_path / "aomas.toml"
    path.write_text(template.render(**variables))
    config = load_config(str(path), environ={})
    assert config.dicom.allowed_calling_aes == ["SCANNER1"]
    assert config.destinations[0]["port"] == 104
    assert str(config.data_dir) == "/var/lib/aomas"
