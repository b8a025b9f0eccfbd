"""The ``aomas`` console script: one group, every command registered in ``COMMANDS`` below.

``web`` and ``serve`` are defined here because they start the web part, which sits at the top of
the import chain; the rest come from ``appliance``.
"""

from __future__ import annotations

import logging
import threading

import click

from appliance import cli as commands
from appliance.access.commands import user
from appliance.audit_commands import audit_group
from appliance.backup_commands import backup_command, restore_command
from appliance.cli import CONFIG_HELP, wait_for_signal, with_config
from appliance.config import Config
from appliance.demo import walkthrough
from appliance.demo.pacs import LocalOrthanc
from appliance.exceptions import AomasError
from appliance.export_commands import export_command
from appliance.model_commands import drift_group, model_group
from appliance.outbox_commands import outbox_group
from appliance.services import build, start_scp, start_worker
from ui.server import WebServer

log = logging.getLogger(__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
def cli(config_path: str | None) -> None:
    """AOMAS: AO-OCT photoreceptor analytics over DICOM."""


@click.command()
@with_config
def web(config: Config) -> None:
    """Run the web page and JSON API only (systemd: aomas-web.service)."""
    server = WebServer(build(config))
    server.start()
    wait_for_signal()
    server.stop()


@click.command()
@click.option("--demo", "with_demo", is_flag=True,
              help="Once up, send a synthetic study through (its results to a local Orthanc "
                   "when installed) and print its result.")
@with_config
def serve(config: Config, with_demo: bool) -> None:
    """The whole appliance in one process: SCP + worker + web. Ctrl-C stops it."""
    pacs = None
    if with_demo:
        config, pacs = walkthrough.start_demo_pacs(config, log=click.echo)
    try:
        appliance = build(config)   # one of each part, shared by all three
        scp = start_scp(appliance)
        worker = start_worker(appliance)
        web_server = WebServer(appliance)
        web_server.start()
        click.echo(f"AOMAS up: DICOM {config.dicom.ae_title}@{config.dicom.bind}:"
                   f"{config.dicom.port}, web http://{config.web.bind}:{config.web.port}, "
                   f"data {config.data_dir}")
        if with_demo:
            threading.Thread(target=_demo_then_keep_serving, args=(config, pacs),
                             daemon=True).start()
        wait_for_signal()
        web_server.stop()
        worker.stop()
        scp.stop()
    finally:
        if pacs is not None:  # also when the appliance failed to start: no orphan Orthanc
            pacs.stop()


def _demo_then_keep_serving(config: Config, pacs: LocalOrthanc | None) -> None:
    try:
        walkthrough.run_demo(config, seed=1, timeout=300, log=click.echo, pacs=pacs)
        click.echo("demo done; still serving (Ctrl-C to stop)")
    except AomasError as error:
        click.echo(f"demo failed: {error}", err=True)


# Every command, registered here and nowhere else: running the box, data in and out, people,
# models.
COMMANDS = (
    serve, commands.scp, commands.worker, web, commands.init, commands.doctor,
    commands.show_config, commands.phantom, commands.send, commands.demo, commands.runs_group,
    outbox_group, user, model_group, drift_group, commands.train_command, commands.evaluate_command,
    audit_group, backup_command, restore_command, export_command,
)
for command in COMMANDS:
    cli.add_command(command)

main = cli
