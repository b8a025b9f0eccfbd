"""Multi-rater adjudication through the API of a running appliance: flag, blind second rating,
Dice, the adjudicator's decision as the reference version, and who may do which step."""

from __future__ import annotations

import re

import numpy as np

from tests.conftest import mask_from, png_of


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def edited(mask: np.ndarray, add: int, remove: int, skip: int = 0) -> np.ndarray:
    changed = mask.copy()
    changed.flat[np.flatnonzero(~mask)[skip:skip + add]] = True
    changed.flat[np.flatnonzero(mask)[skip:skip + remove]] = False
    return changed


def test_flag_blind_rating_dice_and_decision(review_box):
    url = review_box.url
    lena, lars = review_box.login("lena"), review_box.login("lars")
    carl, admin = review_box.login("carl"), review_box.login("admin")
    tile_id = review_box.untouched_tile_id()
    adjudication_url = f"{url}/api/v1/tiles/{tile_id}/adjudication"

    # Nothing to compare until a person has labelled the tile.
    refused = lena.post(adjudication_url, json={"reason": "unsure"})
    assert refused.status_code == 409 and "model's mask" in refused.json()["error"]

    model_mask = mask_from(lena.get(f"{url}/api/v1/tiles/{tile_id}").json())
    first = edited(model_mask, add=30, remove=10)
    saved = lena.post(f"{url}/api/v1/labels", json={
        "tile_id": tile_id, "base_version": 0, "mask_png": png_of(first)})
    assert saved.status_code == 201, saved.text
    flagged = lena.post(adjudication_url, json={"reason": "faint cones at the edge"})
    assert flagged.status_code == 201, flagged.text
    assert flagged.json()["state"] == "awaiting_second_rating"
    assert flagged.json()["first_version"] == 1 and flagged.json()["first_author"] == "lena"
    assert lena.post(adjudication_url, json={}).status_code == 409  # already flagged

    # Lars has not seen the tile: he gets the model's mask, no history, no names.
    tile_for_lars = lars.get(f"{url}/api/v1/tiles/{tile_id}").json()
    assert tile_for_lars["blind"] is True and tile_for_lars["head_version"] is None
    assert (mask_from(tile_for_lars) == model_mask).all()
    history = lars.get(f"{url}/api/v1/tiles/{tile_id}/labels")
    assert history.status_code == 403 and "blind" in history.json()["error"]
    seen = lars.get(adjudication_url).json()
    assert seen["blind"] is True and "first_author" not in seen and "flagged_by" not in seen
    listed = lars.get(f"{url}/api/v1/adjudications",
                      params={"state": "awaiting_second_rating"}).json()
    assert [r["tile_id"] for r in listed if r["tile_id"] == tile_id] == [tile_id]
    assert all("first_author" not in r for r in listed if r["tile_id"] == tile_id)
    # Nor does the queue, or the run page, give away that (and how often) a person changed it.
    queued = lars.get(f"{url}/api/v1/active-learning/queue", params={
        "include_labelled": "true", "uncertainty_threshold": -1, "limit": 500}).json()["tiles"]
    [listed_tile] = [t for t in queued if t["tile_id"] == tile_id]
    assert listed_tile["blind"] is True and listed_tile["head_version"] is None
    run_page = lars.get(f"{url}/runs/{review_box.run_id}").text
    row = re.search(rf'tile_id={tile_id}|/tiles/{tile_id}"[^\n]*', run_page).group(0)
    assert "(blind)" in row, row
    # Lena, who labelled it, still sees her own work; the page says so too.
    assert lena.get(f"{url}/api/v1/tiles/{tile_id}").json()["blind"] is False
    assert (mask_from(lena.get(f"{url}/api/v1/tiles/{tile_id}").json()) == first).all()
    assert "blind-notice" in lars.get(f"{url}/tiles/{tile_id}").text
    assert "blind-notice" not in lena.get(f"{url}/tiles/{tile_id}").text

    # While flagged, the opinions being compared cannot move.
    frozen = admin.post(f"{url}/api/v1/labels", json={
        "tile_id": tile_id, "base_version": 1, "mask_png": png_of(model_mask)})
    assert frozen.status_code == 409 and "adjudication" in frozen.json()["error"]
    # The first rater's rating would not be blind.
    own = lena.post(f"{adjudication_url}/rating", json={"mask_png": png_of(first)})
    assert own.status_code == 403 and "blind" in own.json()["error"]
    early = carl.post(f"{adjudication_url}/decision", json={"choice": "first"})
    assert early.status_code == 409 and "second rating" in early.json()["error"]

    second = edited(model_mask, add=20, remove=25, skip=15)
    rated = lars.post(f"{adjudication_url}/rating", json={"mask_png": png_of(second)})
    assert rated.status_code == 201, rated.text
    assert rated.json()["state"] == "awaiting_decision"
    assert abs(rated.json()["dice"] - dice(first, second)) < 1e-4
    assert 0.5 < rated.json()["dice"] < 1
    again = lars.post(f"{adjudication_url}/rating", json={"mask_png": png_of(second)})
    assert again.status_code == 200 and again.json()["second_at"] == rated.json()["second_at"]
    changed = lars.post(f"{adjudication_url}/rating", json={"mask_png": png_of(first)})
    assert changed.status_code == 409
    # Now that the rating is in, Lars sees everything.
    assert lars.get(f"{url}/api/v1/tiles/{tile_id}/labels").status_code == 200

    # Labelers do not adjudicate; the clinician does, and the union becomes the reference.
    assert lena.post(f"{adjudication_url}/decision", json={"choice": "first"}).status_code == 403
    bad = carl.post(f"{adjudication_url}/decision", json={"choice": "average"})
    assert bad.status_code == 422 and "union" in bad.json()["error"]
    page = carl.get(f"{url}/adjudication/{tile_id}")
    # The page shows the stored Dice (4 decimals, checked against the masks above) to 3.
    assert page.status_code == 200 and f"{rated.json()['dice']:.3f}" in page.text
    compare = carl.get(f"{url}/adjudication/{tile_id}/compare.png")
    assert compare.headers["Content-Type"] == "image/png" and compare.content[:4] == b"\x89PNG"
    decided = carl.post(f"{adjudication_url}/decision",
                        json={"choice": "union", "comment": "both saw real cones"})
    assert decided.status_code == 201, decided.text
    assert decided.json()["version"] == 2 and decided.json()["kind"] == "adjudication"
    assert decided.json()["author"] == "carl"
    tile = carl.get(f"{url}/api/v1/tiles/{tile_id}").json()
    assert tile["reference_version"] == 2 and tile["head_version"] == 2
    assert (mask_from(tile) == (first | second)).all()
    state = carl.get(adjudication_url).json()
    assert (state["state"], state["decision"], state["decided_by"]) == ("decided", "union",
                                                                        "carl")
    twice = carl.post(f"{adjudication_url}/decision", json={"choice": "second"})
    assert twice.status_code == 409
    # Editing goes on from the reference; a new flag starts a new round.
    assert lena.post(f"{url}/api/v1/labels", json={
        "tile_id": tile_id, "base_version": 2, "mask_png": png_of(first)}).status_code == 201

    events = admin.get(f"{url}/api/v1/audit", params={
        "object_id": str(tile_id), "action": "adjudication."}).json()
    assert [(e["actor"], e["action"]) for e in events] == [
        ("carl", "adjudication.decide"), ("lars", "adjudication.rate"),
        ("lena", "adjudication.flag")]
    assert events[0]["detail"]["reference_version"] == 2


def test_a_rater_may_not_adjudicate_and_first_keeps_the_first_version(review_box):
    url = review_box.url
    admin, lars, carl = (review_box.login(name) for name in ("admin", "lars", "carl"))
    tile_id = review_box.untouched_tile_id()
    adjudication_url = f"{url}/api/v1/tiles/{tile_id}/adjudication"
    model_mask = mask_from(admin.get(f"{url}/api/v1/tiles/{tile_id}").json())
    first = edited(model_mask, add=5, remove=5)
    assert admin.post(f"{url}/api/v1/labels", json={
        "tile_id": tile_id, "base_version": 0, "mask_png": png_of(first)}).status_code == 201
    assert admin.post(adjudication_url, json={}).status_code == 201
    # The same mask as the first rater's: complete agreement.
    rated = lars.post(f"{adjudication_url}/rating", json={"mask_png": png_of(first)})
    assert rated.status_code == 201 and rated.json()["dice"] == 1.0

    mine = admin.post(f"{adjudication_url}/decision", json={"choice": "first"})
    assert mine.status_code == 403 and "someone else" in mine.json()["error"]
    kept = carl.post(f"{adjudication_url}/decision", json={"choice": "first"})
    assert kept.status_code == 201
    assert kept.json()["source_version"] == 1 and kept.json()["diff"] == "+0 px \u22120 px"
    page = carl.get(f"{url}/adjudication")
    assert page.status_code == 200 and f'data-tile-id="{tile_id}" data-state="decided"' in page.text
