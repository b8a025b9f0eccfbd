"""The appliance: state and decisions.

Settings, the database and its migrations, the object store, ingest bookkeeping, cases and runs,
the Huey queue and the worker, the pipeline (one plain function), accounts and the audit log.

Rule: imports flow ``ui`` → ``appliance`` → {``dicom``, ``gpu``}. Nothing here imports ``ui``.
"""
