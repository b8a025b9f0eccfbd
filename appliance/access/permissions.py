"""What each role may do. Every web route names one permission; nothing else grants access.

admin: everything. clinician: read cases, results and tiles, adjudicate tiles two labelers disagree
on, accept a case's review. labeler: the review queue, the tile editor, blind second ratings.
ml-engineer: read everything a run produced, upload cases, start runs. researcher: read cases
and results.
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
}


def allowed(role: str, permission: str) -> bool:
    return role in PERMISSIONS[permission]
