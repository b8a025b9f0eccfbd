"""The ``aomas`` console script: the appliance's commands plus ``web`` and ``serve``."""

from __future__ import annotations

import logging
import threading

import click

import appliance.outbox_commands  # noqa: F401  (registers `aomas outbox`)
import appliance.user_commands  # noqa: F401  (registers `aomas user`)
from appliance import demo
from appliance.cli import cli, wait_for_signal, with_config
from appliance.config import Config
from appliance.exceptions import AomasError
from appliance.local_pacs import LocalOrthanc
from appliance.services import open_data_dir, start_scp, start_worker
from ui.server import WebServer

log = logging.getLogger(__name__)


@cli.command()
@with_config
def web(config: Config) -> None:
    """Run the web page and JSON API only (systemd: aomas-web.service)."""
    databases, store = open_data_dir(config)
    server = WebServer(config, databases, store)
    server.start()
    wait_for_signal()
    server.stop()


@cli.command()
@click.option("--demo", "with_demo", is_flag=True,
              help="Once up, send a synthetic study through (its results to a local Orthanc "
                   "when installed) and print its result.")
@with_config
def serve(config: Config, with_demo: bool) -> None:
    """The whole appliance in one process: SCP + worker + web. Ctrl-C stops it."""
    pacs = None
    if with_demo:
        config, pacs = demo.start_demo_pacs(config, log=click.echo)
    try:
        databases, store = open_data_dir(config)
        scp = start_scp(config, databases, store)
        worker = start_worker(config, databases, store)
        web_server = WebServer(config, databases, store)
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
        demo.run_demo(config, seed=1, timeout=300, log=click.echo, pacs=pacs)
        click.echo("demo done; still serving (Ctrl-C to stop)")
    except AomasError as error:
        click.echo(f"demo failed: {error}", err=True)


main = cli
