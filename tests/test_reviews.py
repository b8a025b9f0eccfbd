"""Accepting a case's review: cones recomputed from the reviewed masks, a reviewed SEG and a
verified SR that pass dciodvfy and reach a real Orthanc through the outbox."""

from __future__ import annotations

import io
import subprocess
import time

import numpy as np
import pydicom

from appliance.review.acceptance import reviewed_cones
from appliance.storage import ObjectStore
from gpu.cone_model import cone_target
from tests.conftest import mask_from, need, png_of


def test_reviewed_cones_replace_the_model_only_inside_edited_tiles():
    model = np.array([[4.0, 4.0], [4.0, 12.0], [20.0, 4.0], [20.0, 40.0]])
    left = {"row_px": 0, "column_px": 0, "height_px": 32, "width_px": 32}
    # The labeler erased the cone at (4, 12), kept (4, 4) and (20, 4), added one at (26, 26).
    mask = cone_target((32, 32), np.array([[4.0, 4.0], [20.0, 4.0], [26.0, 26.0]])) > 0
    cones = reviewed_cones(model, (32, 64), [(left, mask)])
    assert sorted(map(tuple, np.round(cones, 6))) == [(4, 4), (20, 4), (20, 40), (26, 26)]
    # No edit: the model's cones exactly.
    assert np.array_equal(reviewed_cones(model, (32, 64), []), model)


def cone_count_in(sr: pydicom.Dataset, measurement: str = "Cone count") -> float | None:
    """The report's first value of ``measurement`` (the whole-field group comes first)."""
    def walk(items):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" \
                in item else ""
            if item.ValueType == "NUM" and name == measurement:
                return float(item.MeasuredValueSequence[0].NumericValue)
            found = walk(item.get("ContentSequence", []))
            if found is not None:
                return found
        return None
    return walk(sr.ContentSequence)


def validator_errors(path) -> list[str]:
    output = subprocess.run([need("dciodvfy"), str(path)], capture_output=True, text=True)
    return [line for line in (output.stdout + output.stderr).splitlines()
            if line.startswith("Error")]


def wait_until_sent(box, sop_instance_uids: set[str], timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [r for r in box.query("SELECT * FROM outbox")
                if r["sop_instance_uid"] in sop_instance_uids]
        if len(rows) == len(sop_instance_uids) and all(r["state"] == "sent" for r in rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"not sent: {[dict(r) for r in box.query('SELECT * FROM outbox')]}")


def settle_adjudications(review_box) -> None:
    """Decide every open adjudication of the box's run (other tests, the fuzz run among them,
    leave tiles flagged): a labeler who took no part rates blind, the clinician keeps the
    first opinion."""
    url, carl = review_box.url, review_box.login("carl")
    raters = [review_box.login(name) for name in ("lars", "lena")]
    for row in carl.get(f"{url}/api/v1/adjudications").json():
        if row["run_id"] != review_box.run_id or row["state"] == "decided":
            continue
        tile_url = f"{url}/api/v1/tiles/{row['tile_id']}"
        if row["state"] == "awaiting_second_rating":
            rater = next(r for r in raters if r.get(tile_url).json()["blind"])
            model_mask = png_of(mask_from(rater.get(tile_url).json()))
            rater.post(f"{tile_url}/adjudication/rating",
                       json={"mask_png": model_mask}).raise_for_status()
        carl.post(f"{tile_url}/adjudication/decision",
                  json={"choice": "first"}).raise_for_status()


def test_accepting_a_review_sends_a_reviewed_seg_and_verified_sr(review_box):
    box, url, run_id = review_box.box, review_box.url, review_box.run_id
    lena, lars, carl = (review_box.login(name) for name in ("lena", "lars", "carl"))
    store = ObjectStore(box.data_dir)
    run = carl.get(f"{url}/api/v1/runs/{run_id}").json()
    original = {o["kind"]: o for o in run["result"]["outputs"]}
    wait_until_sent(box, {o["sop_instance_uid"] for o in original.values()})

    # A tile awaiting adjudication holds the review back; labelers cannot accept at all.
    flagged_id = review_box.untouched_tile_id()
    flagged = lars.get(f"{url}/api/v1/tiles/{flagged_id}").json()
    assert lars.post(f"{url}/api/v1/labels", json={
        "tile_id": flagged_id, "base_version": 0,
        "mask_png": png_of(mask_from(flagged))}).status_code == 201
    assert lars.post(f"{url}/api/v1/tiles/{flagged_id}/adjudication", json={}).status_code == 201
    waiting = carl.post(f"{url}/api/v1/runs/{run_id}/review", json={})
    assert waiting.status_code == 409 and str(flagged_id) in waiting.json()["error"]
    settle_adjudications(review_box)
    assert lena.post(f"{url}/api/v1/runs/{run_id}/review", json={}).status_code == 403

    # The review as it stands (earlier tests edited tiles too), then again with no change.
    first = carl.post(f"{url}/api/v1/runs/{run_id}/review", json={})
    assert first.status_code == 201, first.text
    with np.load(store.path_for(run["result"]["artifacts"]["preprocessed_npz"])) as npz:
        model_cones = npz["cones_px"]
    assert first.json()["measurements"]["model_cone_count"] == len(model_cones)
    again = carl.post(f"{url}/api/v1/runs/{run_id}/review", json={})
    assert again.status_code == 200 and again.json()["review_id"] == first.json()["review_id"]

    # Lena erases every cone of a tile nobody had touched: exactly its cones go.
    tile_id = review_box.untouched_tile_id()
    tile = lena.get(f"{url}/api/v1/tiles/{tile_id}").json()
    assert lena.post(f"{url}/api/v1/labels", json={
        "tile_id": tile_id, "base_version": 0,
        "mask_png": png_of(np.zeros_like(mask_from(tile)))}).status_code == 201
    rows, columns = np.rint(model_cones).astype(int).T
    in_tile = ((rows >= tile["row_px"]) & (rows < tile["row_px"] + tile["height_px"])
               & (columns >= tile["column_px"]) & (columns < tile["column_px"] + tile["width_px"]))
    assert in_tile.sum() >= 5
    accepted = carl.post(f"{url}/api/v1/runs/{run_id}/review", json={"comment": "checked"})
    assert accepted.status_code == 201, accepted.text
    review = accepted.json()
    assert review["review_number"] == first.json()["review_number"] + 1
    assert review["accepted_by"] == "carl" and str(tile_id) in review["label_versions"]
    assert review["measurements"]["cones"]["cone_count"] == \
        first.json()["measurements"]["cones"]["cone_count"] - in_tile.sum()

    outputs = {o["kind"]: o for o in review["outputs"]}
    assert set(outputs) == {"cone_seg", "report"}
    assert not {o["sop_instance_uid"] for o in outputs.values()} & \
        {o["sop_instance_uid"] for o in original.values()}
    for kind, output in outputs.items():
        assert validator_errors(store.path_for(output["sha256"])) == [], kind
    wait_until_sent(box, {o["sop_instance_uid"] for o in outputs.values()})

    client = review_box.pacs.client()
    in_pacs = {}
    for orthanc_id in review_box.pacs.get("/instances"):
        dataset = pydicom.dcmread(io.BytesIO(
            client.get_binary(f"/instances/{orthanc_id}/file")))
        in_pacs[dataset.SOPInstanceUID] = dataset
    sr = in_pacs[outputs["report"]["sop_instance_uid"]]
    assert sr.VerificationFlag == "VERIFIED"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "carl"
    assert sr.SeriesNumber == 916 and "reviewed" in sr.SeriesDescription
    # Each review's report follows the one before it; the first follows the run's own.
    chain = [original["report"]["sop_instance_uid"]] + [
        next(o["sop_instance_uid"] for o in r["outputs"] if o["kind"] == "report")
        for r in carl.get(f"{url}/api/v1/runs/{run_id}/reviews").json()]
    assert chain[-1] == outputs["report"]["sop_instance_uid"] and len(chain) >= 3
    for before, after in zip(chain[:-1], chain[1:], strict=True):
        predecessor = in_pacs[after].PredecessorDocumentsSequence[0] \
            .ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert predecessor.ReferencedSOPInstanceUID == before
    assert cone_count_in(sr) == review["measurements"]["cones"]["cone_count"]
    original_sr = in_pacs[original["report"]["sop_instance_uid"]]
    assert cone_count_in(original_sr) == len(model_cones)
    # The spectrum is the image's: a review carries the run's spectral density unchanged.
    spectral = "Cone density implied by the en-face spectrum"
    assert cone_count_in(original_sr, spectral) is not None
    assert cone_count_in(sr, spectral) == cone_count_in(original_sr, spectral)
    seg = in_pacs[outputs["cone_seg"]["sop_instance_uid"]]
    assert str(seg.ContentCreatorName) == "carl" and seg.SeriesNumber == 915
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert seg.StudyInstanceUID == original_sr.StudyInstanceUID

    page = carl.get(f"{url}/runs/{run_id}")
    assert f"{len(model_cones)} → {review['measurements']['cones']['cone_count']}" in page.text
    events = review_box.login("admin").get(f"{url}/api/v1/audit",
                                           params={"action": "review."}).json()
    # One audit event per accepted review (a repeat that changed nothing adds none).
    assert (events[0]["actor"], events[0]["object_id"]) == ("carl", run_id)
    assert [e["detail"]["review_number"] for e in events] == \
        list(range(review["review_number"], 0, -1))
