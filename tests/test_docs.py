"""What the code promises about itself, checked the way sqlite-utils checks its docs: every
command has help and is registered in the one table, the import rule holds in every module,
and ``--config`` works before the command as well as after it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ui.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("appliance", "dicom", "gpu", "ui")
# DESIGN.md: imports flow ui → appliance → {dicom, gpu}; each package knows its own libraries.
FORBIDDEN = {
    "dicom": {"appliance", "ui", "gpu", "torch", "cupy", "monai", "tensorrt", "huey",
              "sqlite_utils", "flask"},
    "gpu": {"appliance", "ui", "dicom", "pydicom", "pynetdicom", "highdicom", "huey",
            "sqlite_utils", "flask"},
    "appliance": {"ui", "flask", "werkzeug", "waitress"},
    "ui": {"gpu", "dicom", "pynetdicom", "pydicom", "highdicom", "torch", "cupy"},
}


def every_command(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from every_command(command, (*prefix, name))


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in every_command(cli)])
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli, [*path.split(), "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, result.output
    command = cli
    for name in path.split():
        command = command.commands[name]
    assert command.help and len(command.help.strip()) > 10, f"`aomas {path}` says nothing"


def project_modules():
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            yield info.name
        yield package


def test_every_command_is_registered_in_the_one_table():
    defined = set()
    for name in project_modules():
        module = importlib.import_module(name)
        defined |= {id(value) for value in vars(module).values()
                    if isinstance(value, click.Command) and value is not cli}
    top_level = {id(command) for command in COMMANDS}
    subcommands = {id(c) for path, c in every_command(cli) if len(path) > 1}
    assert defined - subcommands == top_level, "a click command is defined but not in COMMANDS"
    assert [c.name for c in COMMANDS] == [cli.commands[c.name].name for c in COMMANDS]
    assert len(cli.commands) == len(COMMANDS)


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_the_import_rule_holds(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    broken = {str(path.relative_to(ROOT)): sorted(imported_names(path) & FORBIDDEN[package])
              for path in files}
    assert not {path: names for path, names in broken.items() if names}, \
        f"DESIGN.md's import rule: {package} may not import these"


def test_the_import_rule_test_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom appliance.runs import get\n\ndef f():\n    import torch\n")
    assert imported_names(bad) == {"os", "appliance", "torch"}


def test_config_may_come_before_the_command(tmp_path):
    config = tmp_path / "aomas.toml"
    config.write_text(f'[appliance]\ndata_dir = "{tmp_path / "elsewhere"}"\n')
    runner = CliRunner()
    before = runner.invoke(cli, ["--config", str(config), "config"])
    after = runner.invoke(cli, ["config", "--config", str(config)])
    assert before.exit_code == after.exit_code == 0, before.output
    assert f"# from {config}" in before.output and before.output == after.output
    # The command's own --config wins over the group's.
    other = tmp_path / "other.toml"
    other.write_text('[appliance]\nlog_level = "DEBUG"\n')
    both = runner.invoke(cli, ["--config", str(config), "config", "--config", str(other)])
    assert f"# from {other}" in both.output
