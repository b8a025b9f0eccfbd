"""The model registry (issue 16, point 1): versions registered from the command line, at
`aomas init` and through the API, weights as safetensors only and checked by SHA-256, cards
complete, versions immutable, every registration audited."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load, save

from appliance.registry import BOOTSTRAP_DIR, CARD, PRODUCTION, STAGING, WEIGHTS
from tests.conftest import PASSWORD
from ui.cli import cli


def site_model(tmp_path, model_id: str = "site-model-1", *, change_weights: bool = False):
    """The bundled model's files under another id (or with one weight changed too)."""
    directory = tmp_path / model_id
    shutil.copytree(BOOTSTRAP_DIR, directory)
    card = json.loads((directory / CARD).read_text())
    card.update(model_id=model_id, version="1", parent="aomas-bootstrap-v3")
    if change_weights:
        tensors = load((directory / WEIGHTS).read_bytes())
        first = sorted(tensors)[0]
        tensors[first] = tensors[first] + 1
        (directory / WEIGHTS).write_bytes(save(tensors))
        card["weights_sha256"] = hashlib.sha256((directory / WEIGHTS).read_bytes()).hexdigest()
    (directory / CARD).write_text(json.dumps(card))
    return directory


def upload(client, directory, *, weights: bytes | None = None, card: bytes | None = None):
    return client.post("/api/v1/models", data={
        "weights": (io.BytesIO((directory / WEIGHTS).read_bytes() if weights is None
                               else weights), "weights.safetensors"),
        "card": (io.BytesIO((directory / CARD).read_bytes() if card is None else card),
                 "model_card.json")})


def test_a_model_is_registered_once_checked_and_never_changed(web_app, tmp_path):
    mia = web_app.client("mia")
    directory = site_model(tmp_path)
    first = upload(mia, directory)
    assert first.status_code == 201, first.get_data(True)
    model = first.get_json()
    assert (model["model_id"], model["stage"], model["registered_by"]) == \
        ("site-model-1", STAGING, "mia")
    assert [(e["from_stage"], e["to_stage"]) for e in model["history"]] == [(None, STAGING)]
    # Stored by content: the object store holds the weights under their SHA-256.
    assert web_app.store.path_for(model["weights_sha256"]).read_bytes() == \
        (directory / WEIGHTS).read_bytes()
    again = upload(mia, directory)
    assert again.status_code == 200 and again.get_json()["registered_at"] == \
        model["registered_at"]

    other = site_model(tmp_path / "other", change_weights=True)
    conflict = upload(mia, other)
    assert conflict.status_code == 409 and "immutable" in conflict.get_json()["error"]

    listed = mia.get("/api/v1/models").get_json()
    assert [m["model_id"] for m in listed] == ["site-model-1"]
    shown = web_app.client("lena").get("/api/v1/models/site-model-1").get_json()
    assert shown["card"]["parent"] == "aomas-bootstrap-v3"
    assert web_app.client("lena").get("/api/v1/models/nope").status_code == 404
    events = web_app.client("admin").get("/api/v1/audit",
                                         query_string={"action": "model."}).get_json()
    assert [(e["actor"], e["action"], e["object_id"]) for e in events] == [
        ("mia", "model.register", "site-model-1")]

    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        web_app.db.execute("UPDATE models SET card = '{}' WHERE model_id = 'site-model-1'")
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        web_app.db.execute("DELETE FROM models")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        web_app.db.execute("DELETE FROM model_events")


def test_what_is_not_a_complete_safe_model_is_refused(web_app, tmp_path):
    mia = web_app.client("mia")
    directory = site_model(tmp_path)
    card = json.loads((directory / CARD).read_text())

    buffer = io.BytesIO()
    torch.save({"cones": {}, "layers": {}}, buffer)   # a pickle: loading it could run code
    pickled = buffer.getvalue()
    refused = upload(mia, directory, weights=pickled, card=json.dumps(
        {**card, "weights_sha256": hashlib.sha256(pickled).hexdigest()}).encode())
    assert refused.status_code == 422 and "not a safetensors file" in refused.get_json()["error"]

    changed = upload(mia, directory, weights=(directory / WEIGHTS).read_bytes()[:-1] + b"\0")
    assert changed.status_code == 422 and "SHA-256" in changed.get_json()["error"]
    incomplete = upload(mia, directory, card=json.dumps(
        {k: v for k, v in card.items() if k not in ("intended_use", "data_hash")}).encode())
    assert incomplete.status_code == 422
    assert "lacks data_hash, intended_use" in incomplete.get_json()["error"]
    bad_id = upload(mia, directory, card=json.dumps({**card, "model_id": "../x"}).encode())
    assert bad_id.status_code == 422 and "model_id" in bad_id.get_json()["error"]
    assert upload(mia, directory, card=b"{not json").status_code == 422
    assert mia.post("/api/v1/models", data={}).status_code == 422
    assert mia.get("/api/v1/models").get_json() == []


def test_init_registers_the_bundled_model_and_the_cli_registers_a_site_one(tmp_path):
    config = tmp_path / "aomas.toml"
    config.write_text(f'[appliance]\ndata_dir = "{tmp_path / "var"}"\n')
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    runner = CliRunner()

    def aomas(*args: str) -> str:
        result = runner.invoke(cli, ["--config", str(config), *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "bundled model aomas-bootstrap-v3 registered (PRODUCTION)" in aomas(
        "init", "--admin-password-file", str(password))
    assert "already registered (PRODUCTION)" in aomas(
        "init", "--admin-password-file", str(password))
    assert "site-model-1 registered (STAGING" in aomas("model", "register",
                                                       str(site_model(tmp_path)))
    listed = json.loads(aomas("model", "list", "--json"))
    assert [(m["model_id"], m["stage"]) for m in listed] == [
        ("aomas-bootstrap-v3", PRODUCTION), ("site-model-1", STAGING)]
    shown = json.loads(aomas("model", "show", "aomas-bootstrap-v3"))
    assert shown["history"][0]["reason"] == "bundled with the appliance: the model runs use"
    broken = runner.invoke(cli, ["--config", str(config), "model", "register", str(tmp_path)])
    assert broken.exit_code != 0 and "has no weights.safetensors" in broken.output


def test_the_models_pages_show_the_card_and_the_stage_history(web_app, tmp_path):
    assert upload(web_app.client("mia"), site_model(tmp_path)).status_code == 201
    lena = web_app.client("lena")
    listing = lena.get("/models").get_data(True)
    assert 'data-model-id="site-model-1"' in listing and ">STAGING<" in listing
    page = lena.get("/models/site-model-1").get_data(True)
    card = json.loads((BOOTSTRAP_DIR / CARD).read_text())
    assert card["intended_use"] in page and card["limitations"][0] in page
    assert 'id="stage">STAGING<' in page and "registered" in page
    assert f"{card['held_out_summary']['B']['f1_min']}" in page
    assert lena.get("/models/nope").status_code == 404
    # Only those who may register are told how.
    assert "aomas model register" not in listing
    assert "aomas model register" in web_app.client("mia").get("/models").get_data(True)


def test_a_gate_measures_a_version_in_its_own_process_and_keeps_the_verdict(tmp_path):
    from appliance.evaluation import evaluate
    from appliance.gate_runner import figures
    from appliance.registry import model_record
    from gpu.phantoms import FAMILIES

    config = tmp_path / "aomas.toml"
    config.write_text(f'[appliance]\ndata_dir = "{tmp_path / "var"}"\n'
                      '[models]\nevaluation_seeds = "1"\n')
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config), "init", "--admin-password-file",
                               str(password)]).exit_code == 0
    gated = runner.invoke(cli, ["--config", str(config), "model", "gate",
                                "aomas-bootstrap-v3"])
    assert gated.exit_code == 0, gated.output
    # The subprocess's figures are the appliance's own evaluation of the same set.
    expected = figures(*evaluate(model_record(), [1], FAMILIES))
    shown = json.loads(runner.invoke(cli, ["--config", str(config), "model", "show",
                                           "aomas-bootstrap-v3"]).output)
    (result,) = shown["gate_results"]
    assert result["figures"] == json.loads(json.dumps(expected))
    assert result["f1_mean"] == expected["f1_mean"] and result["ece"] == expected["ece"]
    assert result["f1_low"] <= result["f1_mean"] <= result["f1_high"]
    assert (result["min_f1"], result["max_ece"]) == (0.9, 0.05)
    assert result["passed"] == (expected["f1_mean"] >= 0.9 and expected["ece"] <= 0.05)
    assert result["evaluation_set"]["seeds"] == [1] and len(result["evaluation_set_sha256"]) == 64
    assert ("passed" if result["passed"] else "failed: ") in gated.output
    # The model page shows it (the Flask app on this data dir, logged in as the admin).
    from appliance.config import load_config
    from appliance.services import build
    from ui.app import create_app

    client = create_app(build(load_config(str(config)))).test_client()
    assert client.post("/api/v1/session", json={"username": "admin", "password": PASSWORD}
                       ).status_code == 201
    page = client.get("/models/aomas-bootstrap-v3").get_data(True)
    assert f"{result['f1_mean']:.3f} ({result['f1_low']:.3f}" in page
    assert result["evaluation_set_sha256"][:16] in page
    db = sqlite3.connect(tmp_path / "var" / "aomas.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE gate_results SET passed = 1")
    assert db.execute("SELECT count(*) FROM audit_events WHERE action = 'model.gate'"
                      ).fetchone()[0] == 1


def test_the_verdict_names_the_failing_figure():
    from appliance.gates import verdict

    figures = {"f1_mean": 0.87, "ece": 0.081, "ece_family": "B"}
    assert verdict(figures, 0.90, 0.05) == (
        False, ["F1 0.87 below 0.90", "ECE 0.081 above 0.050 (family B)"])
    assert verdict({**figures, "f1_mean": 0.93, "ece": 0.02}, 0.90, 0.05) == (True, [])
