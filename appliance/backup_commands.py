"""``aomas backup DEST`` and ``aomas restore SRC`` (see ``appliance.backup``)."""

from __future__ import annotations

from pathlib import Path

import click

from appliance import audit, backup
from appliance.cli import with_config
from appliance.config import Config
from appliance.database import connect
from appliance.services import open_data_dir

ACTOR = "aomas backup"


@click.command(name="backup")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@click.option("--keep", type=click.IntRange(min=1), default=7, show_default=True,
              help="Snapshots kept in DESTINATION; older ones and the objects only they "
                   "named are removed.")
@with_config
def backup_command(config: Config, destination: Path, keep: int) -> None:
    """Snapshot the running appliance into DESTINATION: the database (SQLite online backup)
    and the objects it names, each copied once (incremental). Off-box: point restic at
    DESTINATION afterwards (README, "Backups")."""
    databases, store = open_data_dir(config)
    snapshot = backup.backup(config.data_dir, store, destination.resolve(), keep=keep,
                             log=click.echo)
    audit.record(databases.get(), actor=ACTOR, action="backup.create", object_kind="backup",
                 object_id=snapshot.directory.name,
                 detail={"objects": snapshot.objects, "objects_copied": snapshot.objects_copied,
                         "bytes_copied": snapshot.bytes_copied, "counts": snapshot.counts})
    click.echo(f"backed up to {snapshot.directory}")


@click.command(name="restore")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@with_config
def restore_command(config: Config, source: Path) -> None:
    """Restore SOURCE (a backup directory: its newest snapshot; or one snapshot) into the
    configured data dir, which must be empty. Every hash is checked; a corrupt or missing
    object is named and nothing is left behind."""
    snapshot, manifest = backup.restore(source.resolve(), config.data_dir, log=click.echo)
    db = connect(config.data_dir / backup.DATABASE)   # migrates one from an older release
    chain = audit.verify(db, audit.read_heads(config.data_dir / audit.HEADS_FILE))
    audit.record(db, actor="aomas restore", action="backup.restore", object_kind="backup",
                 object_id=snapshot.name,
                 detail={"objects": len(manifest["objects"]), "counts": manifest["counts"],
                         "audit_intact": chain.intact})
    db.conn.close()
    counts = ", ".join(f"{count} {table}" for table, count in manifest["counts"].items())
    click.echo(f"restored into {config.data_dir}: {len(manifest['objects'])} objects verified; "
               f"{counts}")
    click.echo(f"audit log: {'intact' if chain.intact else 'BROKEN: ' + str(chain.broken)}")
