"""``aomas outbox list|retry``: what went to which PACS, and sending again what did not."""

from __future__ import annotations

import json

import click

from appliance import outbox
from appliance.cli import local_time, with_config
from appliance.config import Config
from appliance.services import open_data_dir


@click.group(name="outbox")
def outbox_group() -> None:
    """Outputs on their way to the PACS."""


@outbox_group.command(name="list")
@click.option("--state", type=click.Choice(outbox.STATES))
@click.option("--json", "as_json", is_flag=True)
@with_config
def outbox_list(config: Config, state: str | None, as_json: bool) -> None:
    """Every output per destination with its state and the last DIMSE status."""
    databases, _ = open_data_dir(config)
    rows = outbox.rows(databases.get(), state)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'id':>5}  {'destination':<12}{'kind':<20}{'state':<9}{'status':<8}"
               f"{'tries':>5}  {'updated':<20}run / detail")
    for row in rows:
        updated = local_time(row["updated_at"])
        click.echo(f"{row['id']:>5}  {row['destination']:<12}{row['kind']:<20}"
                   f"{row['state']:<9}{row['last_status'] or '':<8}{row['attempts']:>5}  "
                   f"{updated:<20}{row['run_id'][:12]} {row['detail'] or ''}")


@outbox_group.command(name="retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--run", "run_id", help="Only this run's outputs.")
@click.option("--destination", help="Only outputs for this destination.")
@click.option("--all", "everything", is_flag=True, help="Every dead or waiting output.")
@with_config
def outbox_retry(config: Config, ids: tuple[int, ...], run_id: str | None,
                 destination: str | None, everything: bool) -> None:
    """Send dead or waiting outputs again now (by id, run, destination, or --all)."""
    if not (ids or run_id or destination or everything):
        raise click.UsageError("name outbox ids, --run, --destination or --all")
    databases, _ = open_data_dir(config)
    count = outbox.retry(databases.get(), actor="aomas outbox", ids=ids, run_id=run_id,
                         destination=destination)
    click.echo(f"{count} output(s) queued to send again; the worker sends them within seconds")
