"""``aomas user add|list|disable|enable``: local accounts, every change audited."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.access import accounts
from appliance.cli import with_config
from appliance.config import Config
from appliance.services import open_data_dir

ACTOR = "aomas user"  # the command line has no login; the audit names the tool


@click.group()
def user() -> None:
    """Manage local accounts."""


@user.command(name="add")
@click.argument("username")
@click.option("--role", type=click.Choice(accounts.ROLES), required=True)
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False))
@with_config
def user_add(config: Config, username: str, role: str, password_file: str | None) -> None:
    """Create an account (prints a generated password if no file is given)."""
    databases, _ = open_data_dir(config)
    password = (Path(password_file).read_text().strip() if password_file
                else accounts.generate_password())
    if not accounts.create_user(databases.get(), username, password, role, actor=ACTOR):
        raise click.ClickException(f"account {username!r} already exists")
    click.echo(f"account {username!r} ({role}) created"
               + ("" if password_file else f"; password (shown once): {password}"))


@user.command(name="list")
@with_config
def user_list(config: Config) -> None:
    """Accounts with their role; disabled ones marked."""
    databases, _ = open_data_dir(config)
    for row in accounts.list_users(databases.get()):
        click.echo(f"{row['username']:<20}{row['role']:<14}"
                   f"{'disabled' if row['disabled'] else ''}")


@user.command(name="disable")
@click.argument("username")
@with_config
def user_disable(config: Config, username: str) -> None:
    """Disable an account: no more logins, open sessions end (kept for the audit log)."""
    _set_disabled(config, username, True)


@user.command(name="enable")
@click.argument("username")
@with_config
def user_enable(config: Config, username: str) -> None:
    """Enable a disabled account again."""
    _set_disabled(config, username, False)


def _set_disabled(config: Config, username: str, disabled: bool) -> None:
    databases, _ = open_data_dir(config)
    accounts.set_disabled(databases.get(), username, disabled, actor=ACTOR)
    click.echo(f"account {username!r} {'disabled' if disabled else 'enabled'}")
