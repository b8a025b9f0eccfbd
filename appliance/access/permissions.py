"""What each role may do. Every web route names one permission; nothing else grants access.

admin: everything. clinician: read cases, results and tiles, adjudicate tiles two labelers disagree
on, accept a case's review. labeler: the review queue, the tile editor, blind second ratings.
ml-engineer: read everything a run produced, upload cases, start runs, register, gate,
promote and roll back models (a failed gate only an admin may override).
researcher: read cases and results, export a study de-identified. Every role reads the
registered models' cards.
"""

from __future__ import annotations

EVERY_ROLE = frozenset({"admin", "clinician", "labeler", "ml-engineer", "researcher"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "own_account": EVERY_ROLE,  # log out, change one's own password, read the API document
    "view_runs": EVERY_ROLE,
    "create_runs": frozenset({"admin", "ml-engineer"}),
    "upload_cases": frozenset({"admin", "ml-engineer"}),
    "view_tiles": frozenset({"admin", "clinician", "labeler", "ml-engineer"}),
    "edit_labels": frozenset({"admin", "labeler"}),
    "adjudicate": frozenset({"admin", "clinician"}),
    "accept_reviews": frozenset({"admin", "clinician"}),
    "manage_outbox": frozenset({"admin"}),
    "view_audit": frozenset({"admin"}),
    "view_models": EVERY_ROLE,  # cards and stages: what computed the numbers people read
    "register_models": frozenset({"admin", "ml-engineer"}),
    "promote_models": frozenset({"admin", "ml-engineer"}),  # gate, promote (gate passed)
    "override_gates": frozenset({"admin"}),  # promote despite a failed gate, with a reason
    "rollback_models": frozenset({"admin", "ml-engineer"}),
    "train_models": frozenset({"admin", "ml-engineer"}),  # retrain from reviewed labels
    "view_metrics": frozenset({"admin"}),  # /metrics away from web.metrics_addresses
    "view_alerts": EVERY_ROLE,  # the banner: a drifting model concerns everyone reading
    "resolve_alerts": frozenset({"admin", "ml-engineer"}),
    "view_drift": EVERY_ROLE,
    "check_drift": frozenset({"admin", "ml-engineer"}),
    "export_deidentified": frozenset({"admin", "researcher"}),  # a study, PS3.15 Basic Profile
}


def allowed(role: str, permission: str) -> bool:
    return role in PERMISSIONS[permission]
