"""``aomas export --study UID --out DIR --deidentify`` (see ``appliance.export``)."""

from __future__ import annotations

from pathlib import Path

import click

from appliance import export
from appliance.cli import with_config
from appliance.config import Config
from appliance.services import open_data_dir


@click.command(name="export")
@click.option("--study", "study_instance_uid", required=True,
              help="Study Instance UID of the study to export.")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="New or empty directory for the export.")
@click.option("--deidentify", is_flag=True,
              help="Required: the export goes through the PS3.15 Basic Application Level "
                   "Confidentiality Profile (identified exports are not offered).")
@click.option("--date-shift-days", type=click.IntRange(min=0), default=None,
              help="Shift dates this many days back (default: export.date_shift_days).")
@with_config
def export_command(config: Config, study_instance_uid: str, out_dir: Path, deidentify: bool,
                   date_shift_days: int | None) -> None:
    """Write a study's inputs and outputs, de-identified with UIDs remapped consistently and
    dates shifted, and its measurements as CSV, for research."""
    if not deidentify:
        raise click.UsageError("only de-identified exports are made: add --deidentify")
    databases, store = open_data_dir(config)
    summary = export.export_study(
        databases.get(), store, study_instance_uid.strip(), out_dir.resolve(),
        date_shift_days=config.export.date_shift_days if date_shift_days is None
        else date_shift_days, actor="aomas export")
    click.echo(f"exported {summary.cases} case(s): {summary.inputs} input and "
               f"{summary.outputs} output instance(s), measurements.csv, into "
               f"{summary.directory} (dates shifted {summary.date_shift}; export "
               f"{summary.export_id})")
