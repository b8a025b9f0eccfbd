"""The appliance: state and decisions.

Settings, the database and its migrations, the object store, ingest bookkeeping, cases and runs,
the Huey queue and the worker, the pipeline (one plain function), outputs and the outbox to the
PACS, review (tiles, labels, adjudication), accounts, sessions and the audit log, and the
commands that act on them.

Rule: imports flow ``ui`` → ``appliance`` → {``dicom``, ``gpu``}. Nothing here imports ``ui``.
"""
