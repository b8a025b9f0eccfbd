"""Label versions of a review tile: every save is a new version, nothing is overwritten.

Version 0 is the model's own mask; versions 1, 2, … are people's. A save states the version it
started from (``base_version``), so an edit made on a stale copy is refused instead of silently
undoing someone else's work. A rollback is a new version with an older version's mask. Masks are
PNG files in the object store (0 = background, 255 = cone); equal masks are one file.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import sqlite_utils
from PIL import Image, UnidentifiedImageError

from appliance import audit
from appliance.database import write_transaction
from appliance.exceptions import Conflict, InvalidInput, NotFound
from appliance.limits import MAX_IDEMPOTENCY_KEY_CHARS, MAX_TEXT_CHARS
from appliance.review import tiles
from appliance.review.case_images import png_bytes
from appliance.storage import ObjectStore

MODEL, EDIT, ROLLBACK, ADJUDICATION = "model", "edit", "rollback", "adjudication"
KINDS = (MODEL, EDIT, ROLLBACK, ADJUDICATION)   # version 0 is the model's, never stored
# Stored with each version but not shown: where the mask lies, and the client's retry key.
_INTERNAL = ("mask_sha256", "idempotency_key")


def shown(version: dict[str, Any]) -> dict[str, Any]:
    """A version as people and clients see it, with its diff text."""
    return {**{k: v for k, v in version.items() if k not in _INTERNAL},
            "diff": diff_text(version)}


def decode_mask(png: bytes, shape: tuple[int, int]) -> np.ndarray:
    """A PNG sent by a client as a boolean mask of ``shape``; any non-zero pixel is a cone."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            pixels = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise InvalidInput("mask_png is not a PNG image") from None
    if pixels.shape != tuple(shape):
        raise InvalidInput(f"the mask is {pixels.shape[1]}x{pixels.shape[0]} pixels; this tile "
                           f"is {shape[1]}x{shape[0]}")
    return pixels > 0


def encode_mask(mask: np.ndarray) -> bytes:
    return png_bytes(np.where(mask, 255, 0).astype(np.uint8))


def mask_of(db: sqlite_utils.Database, store: ObjectStore, tile: dict[str, Any],
            version: int) -> np.ndarray:
    """The mask as it was at ``version`` (0 = the model's)."""
    if version == 0:
        return tiles.images(db, store, tile).model_mask
    row = db.execute("SELECT mask_sha256 FROM labels WHERE tile_id = ? AND version = ?",
                     [tile["tile_id"], version]).fetchone()
    if row is None:
        raise NotFound(f"tile {tile['tile_id']} has no version {version}; its history lists "
                       "the versions there are")
    with Image.open(store.path_for(row[0])) as image:
        return np.asarray(image) > 0


def history(db: sqlite_utils.Database, tile_id: int) -> list[dict[str, Any]]:
    """Every version of the tile as ``shown``, oldest first, the model's as version 0."""
    tile = tiles.get(db, tile_id)
    model = {"label_id": None, "tile_id": tile_id, "version": 0, "author": "model",
             "created_at": tile["created_at"], "kind": MODEL, "source_version": None,
             "added_px": 0, "removed_px": 0, "comment": ""}
    rows = db["labels"].rows_where("tile_id = ?", [tile_id], order_by="version")
    return [shown(version) for version in (model, *rows)]


def save(db: sqlite_utils.Database, store: ObjectStore, tile_id: int, mask_png: bytes, *,
         author: str, base_version: int, comment: str = "",
         idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
    """Store an edited mask as the tile's next version; return (version row, created).

    The same ``idempotency_key`` from the same author returns the version it created the first
    time (created False), so a double click or a client retry makes no second version.
    """
    _check_text(comment, idempotency_key)
    tile = tiles.get(db, tile_id)
    mask = decode_mask(mask_png, (tile["height_px"], tile["width_px"]))
    return add_version(db, store, tile, mask, author=author, kind=EDIT,
                        base_version=base_version, source_version=None, comment=comment,
                        idempotency_key=idempotency_key)


def rollback(db: sqlite_utils.Database, store: ObjectStore, tile_id: int, target_version: int,
             *, author: str, comment: str = "",
             idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
    """A new version whose mask is ``target_version``'s; the versions between stay in history."""
    _check_text(comment, idempotency_key)
    tile = tiles.get(db, tile_id)
    if not 0 <= target_version <= tile["head_version"]:
        raise NotFound(f"tile {tile_id} has no version {target_version}; its history lists "
                       "the versions there are")
    mask = mask_of(db, store, tile, target_version)
    return add_version(db, store, tile, mask, author=author, kind=ROLLBACK,
                        base_version=tile["head_version"], source_version=target_version,
                        comment=comment, idempotency_key=idempotency_key)


def diff_text(version: dict[str, Any]) -> str:
    """How the version changed its predecessor, as the editor shows it: "+12 px −5 px"."""
    return f"+{version['added_px']} px \u2212{version['removed_px']} px"


def add_version(db: sqlite_utils.Database, store: ObjectStore, tile: dict, mask: np.ndarray, *,
                author: str, kind: str, base_version: int, source_version: int | None,
                comment: str, idempotency_key: str | None,
                also: Callable[[dict[str, Any]], None] | None = None,
                ) -> tuple[dict[str, Any], bool]:
    """Append ``mask`` as the tile's next version; ``also(version)`` runs in the same
    transaction (an adjudication records its decision there)."""
    head = mask_of(db, store, tile, tile["head_version"])
    sha256 = store.put_bytes(encode_mask(mask))  # before the transaction: fsync is slow
    with write_transaction(db):
        # Looked up inside the transaction: two submits of one key cannot both get through.
        earlier = _by_key(db, author, idempotency_key)
        if earlier is not None:
            if (earlier["tile_id"], earlier["kind"], earlier["mask_sha256"],
                    earlier["source_version"]) != (tile["tile_id"], kind, sha256, source_version):
                raise Conflict("this Idempotency-Key was used for a different change; send a "
                               "new key with each new change")
            return earlier, False
        if kind != ADJUDICATION and _awaits_adjudication(db, tile["tile_id"]):
            raise Conflict(f"tile {tile['tile_id']} is flagged for adjudication; its next "
                           "version is the adjudicator's decision")
        current = db["tiles"].get(tile["tile_id"])["head_version"]
        if current != base_version:
            raise Conflict(f"tile {tile['tile_id']} is at version {current}, this change was "
                           f"made on version {base_version}; reload the tile and redo it")
        version = {
            "tile_id": tile["tile_id"], "version": current + 1, "mask_sha256": sha256,
            "author": author, "created_at": time.time(), "kind": kind,
            "source_version": source_version,
            "added_px": int((mask & ~head).sum()), "removed_px": int((head & ~mask).sum()),
            "comment": comment, "idempotency_key": idempotency_key,
        }
        version["label_id"] = db["labels"].insert(version).last_pk
        db["tiles"].update(tile["tile_id"], {"head_version": current + 1})
        audit.record(db, actor=author, action=f"label.{kind}", object_kind="tile",
                     object_id=str(tile["tile_id"]),
                     detail={"version": current + 1, "source_version": source_version,
                             "run_id": tile["run_id"], "added_px": version["added_px"],
                             "removed_px": version["removed_px"]})
        if also is not None:
            also(version)
    return version, True


def _awaits_adjudication(db, tile_id: int) -> bool:
    return bool(db["adjudications"].count_where("tile_id = ? AND decided_at IS NULL",
                                                [tile_id]))


def _by_key(db, author: str, idempotency_key: str | None) -> dict[str, Any] | None:
    if not idempotency_key:
        return None
    rows = list(db["labels"].rows_where("author = ? AND idempotency_key = ?",
                                        [author, idempotency_key]))
    return rows[0] if rows else None


def _check_text(comment: str, idempotency_key: str | None) -> None:
    if len(comment) > MAX_TEXT_CHARS:
        raise InvalidInput(f"comments are limited to {MAX_TEXT_CHARS} characters")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidInput(f"an Idempotency-Key has 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")
