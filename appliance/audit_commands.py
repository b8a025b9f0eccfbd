"""``aomas audit verify|head``: check the audit log's hash chain, and log its head."""

from __future__ import annotations

from pathlib import Path

import click

from appliance import audit
from appliance.cli import with_config
from appliance.config import Config
from appliance.exceptions import AomasError
from appliance.services import open_data_dir

ACTOR = "aomas audit"


class AuditBroken(AomasError):
    """The audit chain does not hold; the message names the first broken link."""


@click.group(name="audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command(name="verify")
@click.option("--heads", "heads_files", multiple=True, type=click.Path(exists=True,
              dir_okay=False, path_type=Path),
              help="A file of logged heads to check as well, e.g. `journalctl -u aomas-worker "
                   "-o cat > heads.txt` (repeatable; the data dir's audit-heads.log always).")
@with_config
def audit_verify(config: Config, heads_files: tuple[Path, ...]) -> None:
    """Recompute the chain from the first event; exit 1 naming the first broken link."""
    databases, _ = open_data_dir(config)
    db = databases.get()
    heads = [head for path in (config.data_dir / audit.HEADS_FILE, *heads_files)
             for head in audit.read_heads(path)]
    result = audit.verify(db, heads)
    audit.record(db, actor=ACTOR, action="audit.verify", object_kind="audit_log",
                 object_id=str(result.head_id),
                 detail={"events": result.events, "heads_checked": result.heads_checked,
                         "intact": result.intact})
    if not result.intact:
        raise AuditBroken(f"audit log broken: {result.broken}")
    click.echo(f"audit log intact: {result.events} events, head {result.head_id} "
               f"{result.head_hash[:16]}…, {result.heads_checked} logged head(s) match")


@audit_group.command(name="head")
@with_config
def audit_head(config: Config) -> None:
    """Write the chain's head to the system log and audit-heads.log now (the worker does
    this daily at 00:05 UTC)."""
    databases, _ = open_data_dir(config)
    db = databases.get()
    head = audit.log_head(db, config.data_dir)
    if head is None:
        raise AuditBroken("the audit log is empty; there is no head to log")
    # After the head it logged: that head stays a checkpoint the chain must still pass.
    audit.record(db, actor=ACTOR, action="audit.head", object_kind="audit_log",
                 object_id=str(head[0]), detail={})
    click.echo(audit.HEAD_LINE.format(id=head[0], hash=head[1]))
