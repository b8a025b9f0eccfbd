"""Multi-rater adjudication of a review tile: a second, blind opinion and a decision.

A labeler who is unsure of a tile (or disagrees with the version before theirs) flags it. The
head version at that moment is the first opinion. A second labeler, who has not labelled the
tile, then labels it *blind*: they see the image and the model's mask, never a person's
version, so the two opinions are independent. Their agreement is the Dice coefficient of the
two masks. An adjudicator (neither rater) keeps one mask, or their union or intersection, and
that becomes the tile's next label version and its reference version. While a tile awaits the
decision, ordinary edits are refused, so the opinions being compared cannot move.

States: awaiting_second_rating → awaiting_decision → decided. Every step is audited.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import sqlite_utils

from appliance import audit
from appliance.database import write_transaction
from appliance.exceptions import Conflict, InvalidInput, NotFound, NotPermitted
from appliance.limits import MAX_TEXT_CHARS
from appliance.review import labels, tiles
from appliance.storage import ObjectStore

AWAITING_SECOND_RATING, AWAITING_DECISION, DECIDED = (
    "awaiting_second_rating", "awaiting_decision", "decided")
STATES = (AWAITING_SECOND_RATING, AWAITING_DECISION, DECIDED)
# What an adjudicator may keep: one rater's mask, or both combined.
CHOICES = ("first", "second", "union", "intersection")
# All a blind rater learns of an adjudication: whose version it is, and who flagged it, would
# tell them whose work they are checking.
SHOWN_WHEN_BLIND = ("adjudication_id", "tile_id", "state", "flagged_at", "run_id", "case_id")


def dice(first: np.ndarray, second: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|); two empty masks agree completely."""
    total = int(first.sum()) + int(second.sum())
    return 1.0 if total == 0 else round(2 * int((first & second).sum()) / total, 4)


def state_of(row: dict[str, Any]) -> str:
    if row["decided_at"] is not None:
        return DECIDED
    return AWAITING_DECISION if row["second_at"] is not None else AWAITING_SECOND_RATING


def shown(row: dict[str, Any]) -> dict[str, Any]:
    """An adjudication as the API and pages show it (the blind mask stays in the store)."""
    return {**{k: v for k, v in row.items() if k != "second_mask_sha256"},
            "state": state_of(row)}


def as_seen_by(db: sqlite_utils.Database, row: dict[str, Any], username: str) -> dict[str, Any]:
    """``shown(row)``, less who rated and when, for someone it must stay blind to; ``blind``
    says which it is."""
    seen = shown(row)
    if is_blind_for(db, row["tile_id"], username):
        return {**{k: v for k, v in seen.items() if k in SHOWN_WHEN_BLIND}, "blind": True}
    return {**seen, "blind": False}


def current(db: sqlite_utils.Database, tile_id: int) -> dict[str, Any] | None:
    """The tile's open adjudication, or else its latest decided one, or None."""
    rows = list(db["adjudications"].rows_where(
        "tile_id = ?", [tile_id], order_by="decided_at IS NULL DESC, adjudication_id DESC",
        limit=1))
    return rows[0] if rows else None


def listing(db: sqlite_utils.Database, state: str | None = None,
            limit: int = 200) -> list[dict[str, Any]]:
    """Adjudications, oldest waiting first, with each tile's case and run."""
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}")
    condition = {None: "1", AWAITING_SECOND_RATING: "a.second_at IS NULL AND a.decided_at IS NULL",
                 AWAITING_DECISION: "a.second_at IS NOT NULL AND a.decided_at IS NULL",
                 DECIDED: "a.decided_at IS NOT NULL"}[state]
    rows = db.query(
        "SELECT a.*, t.run_id, t.case_id, t.mean_uncertainty FROM adjudications a "
        f"JOIN tiles t USING (tile_id) WHERE {condition} "
        "ORDER BY a.decided_at IS NOT NULL, a.flagged_at LIMIT ?", [limit])
    return [shown(row) for row in rows]


def is_blind_for(db: sqlite_utils.Database, tile_id: int, username: str) -> bool:
    """Whether ``username`` must not see the tile's versions: it awaits a blind rating and they
    have not taken part in it (those who have are no longer eligible to rate it blind)."""
    row = current(db, tile_id)
    return (row is not None and state_of(row) == AWAITING_SECOND_RATING
            and username not in _participants(db, row))


def tile_as_seen_by(db: sqlite_utils.Database, tile: dict[str, Any],
                    username: str) -> dict[str, Any]:
    """The tile row as ``username`` may see it, wherever tiles are listed: to someone it must
    stay blind to, its version numbers would tell that, and how often, a person changed it."""
    blind = is_blind_for(db, tile["tile_id"], username)
    shown_tile = {**tile, "blind": blind}
    if blind:
        shown_tile.update(head_version=None, reference_version=None)
    return shown_tile


def flag(db: sqlite_utils.Database, tile_id: int, *, actor: str,
         reason: str = "") -> dict[str, Any]:
    """Ask for a second opinion on the tile's current version."""
    if len(reason) > MAX_TEXT_CHARS:
        raise InvalidInput(f"a reason is limited to {MAX_TEXT_CHARS} characters")
    with write_transaction(db):
        tile = tiles.get(db, tile_id)
        if tile["head_version"] == 0:
            raise Conflict(f"tile {tile_id} has only the model's mask; save your labelling "
                           "first, adjudication compares two people's masks")
        open_row = current(db, tile_id)
        if open_row is not None and state_of(open_row) != DECIDED:
            raise Conflict(f"tile {tile_id} is already flagged for adjudication "
                           f"({state_of(open_row).replace('_', ' ')})")
        first_author = db.execute("SELECT author FROM labels WHERE tile_id = ? AND version = ?",
                                  [tile_id, tile["head_version"]]).fetchone()[0]
        row = {"tile_id": tile_id, "flagged_by": actor, "flagged_at": time.time(),
               "reason": reason, "first_version": tile["head_version"],
               "first_author": first_author}
        row["adjudication_id"] = db["adjudications"].insert(row).last_pk
        audit.record(db, actor=actor, action="adjudication.flag", object_kind="tile",
                     object_id=str(tile_id), detail={"run_id": tile["run_id"],
                                                     "first_version": tile["head_version"]})
    return shown(db["adjudications"].get(row["adjudication_id"]))


def rate_blind(db: sqlite_utils.Database, store: ObjectStore, tile_id: int, mask_png: bytes,
               *, rater: str) -> tuple[dict[str, Any], bool]:
    """Record the blind second rating; return (adjudication, created). Sending the same mask
    again answers with the recorded rating."""
    tile = tiles.get(db, tile_id)
    mask = labels.decode_mask(mask_png, (tile["height_px"], tile["width_px"]))
    sha256 = store.put_bytes(labels.encode_mask(mask))
    row = _open(db, tile_id)
    if row["second_author"] == rater and row["second_mask_sha256"] == sha256:
        return shown(row), False
    if state_of(row) != AWAITING_SECOND_RATING:
        raise Conflict(f"tile {tile_id} already has its second rating, by "
                       f"{row['second_author']}; it awaits the adjudicator")
    if rater in _participants(db, row):
        raise NotPermitted(f"you have labelled or flagged tile {tile_id}, so your rating would "
                           "not be blind; another labeler gives the second rating")
    first = labels.mask_of(db, store, tile, row["first_version"])
    with write_transaction(db):
        if state_of(db["adjudications"].get(row["adjudication_id"])) != AWAITING_SECOND_RATING:
            raise Conflict(f"tile {tile_id} received its second rating meanwhile; reload")
        agreement = dice(first, mask)
        db["adjudications"].update(row["adjudication_id"], {
            "second_author": rater, "second_mask_sha256": sha256, "second_at": time.time(),
            "dice": agreement})
        audit.record(db, actor=rater, action="adjudication.rate", object_kind="tile",
                     object_id=str(tile_id), detail={"run_id": tile["run_id"],
                                                     "dice": agreement})
    return shown(db["adjudications"].get(row["adjudication_id"])), True


def masks(db: sqlite_utils.Database, store: ObjectStore,
          tile_id: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(adjudication, first mask, second mask) of a tile awaiting or past its decision."""
    tile = tiles.get(db, tile_id)   # NotFound first: no such tile is not a conflict
    row = current(db, tile_id)
    if row is None or state_of(row) == AWAITING_SECOND_RATING:
        raise Conflict(f"tile {tile_id} has no second rating to compare yet")
    with store.path_for(row["second_mask_sha256"]).open("rb") as png:
        second = labels.decode_mask(png.read(), (tile["height_px"], tile["width_px"]))
    return row, labels.mask_of(db, store, tile, row["first_version"]), second


def decide(db: sqlite_utils.Database, store: ObjectStore, tile_id: int, choice: str, *,
           adjudicator: str, comment: str = "") -> dict[str, Any]:
    """Keep ``choice`` of the two opinions as the tile's next version and its reference."""
    if choice not in CHOICES:
        raise InvalidInput(f"choice must be one of {', '.join(CHOICES)}")
    row, first, second = masks(db, store, tile_id)
    if state_of(row) == DECIDED:
        raise Conflict(f"tile {tile_id} was decided by {row['decided_by']} ({row['decision']})")
    if adjudicator in (row["first_author"], row["second_author"]):
        raise NotPermitted("you rated this tile; the adjudicator must be someone else")
    mask = {"first": first, "second": second, "union": first | second,
            "intersection": first & second}[choice]
    tile = tiles.get(db, tile_id)

    def record_decision(version: dict[str, Any]) -> None:
        if state_of(db["adjudications"].get(row["adjudication_id"])) != AWAITING_DECISION:
            raise Conflict(f"tile {tile_id} was decided meanwhile; reload")
        db["adjudications"].update(row["adjudication_id"], {
            "decided_by": adjudicator, "decided_at": time.time(), "decision": choice,
            "reference_version": version["version"]})
        db["tiles"].update(tile_id, {"reference_version": version["version"]})
        audit.record(db, actor=adjudicator, action="adjudication.decide", object_kind="tile",
                     object_id=str(tile_id),
                     detail={"run_id": tile["run_id"], "decision": choice,
                             "reference_version": version["version"], "dice": row["dice"]})

    version, _ = labels.add_version(
        db, store, tile, mask, author=adjudicator, kind=labels.ADJUDICATION,
        base_version=row["first_version"],
        source_version=row["first_version"] if choice == "first" else None,
        comment=comment or f"adjudicated: {choice}", idempotency_key=None,
        also=record_decision)
    return labels.shown(version)


def _open(db, tile_id: int) -> dict[str, Any]:
    row = current(db, tile_id)
    if row is None or state_of(row) == DECIDED:
        raise NotFound(f"tile {tile_id} is not flagged for adjudication; flag it first")
    return row


def _participants(db, row: dict[str, Any]) -> set[str]:
    authors = {author for (author,) in db.execute(
        "SELECT DISTINCT author FROM labels WHERE tile_id = ?", [row["tile_id"]])}
    return authors | {row["flagged_by"]} | ({row["second_author"]} if row["second_author"]
                                            else set())
