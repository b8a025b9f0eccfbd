"""Models: the bundled bootstrap model, or a site's own, as weights + model card; and the
registry of every model version the appliance knows (``register``, ``list_models``).

A model is a directory with ``weights.safetensors`` and ``model_card.json``. The weights file
holds every network's tensors (``cones.*``: en-face cone detection, ``layers.*``: B-scan layer
labels), so one checksum covers everything a run computed with. Tensors only: safetensors holds
no code, where a pickled ``torch.load`` file can run whatever it carries. The run manifest
records the model id and that checksum; the weights are checked against it on every load, and a
worker refuses to run a model whose weights differ from what the manifest names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlite_utils

from appliance import audit
from appliance.database import write_transaction
from appliance.exceptions import ConfigurationError, Conflict, InvalidInput, NotFound
from appliance.storage import ObjectStore, sha256_of

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "models" / "aomas-bootstrap-v3"
WEIGHTS, CARD = "weights.safetensors", "model_card.json"
MODEL_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class ModelRecord:
    model_id: str
    directory: Path
    weights_sha256: str

    def manifest_entry(self) -> dict:
        return {"id": self.model_id, "weights_sha256": self.weights_sha256}


@functools.cache
def model_record(directory: str = "") -> ModelRecord:
    """The model in ``directory`` (empty: the bundled bootstrap model)."""
    path = Path(directory) if directory else BOOTSTRAP_DIR
    if not (path / WEIGHTS).is_file() or not (path / CARD).is_file():
        raise ConfigurationError(f"{path} is not a model directory: it needs {WEIGHTS} and "
                                 f"{CARD} (see `aomas train --help`)")
    card = json.loads((path / CARD).read_text())
    return ModelRecord(model_id=card["model_id"], directory=path,
                       weights_sha256=sha256_of(path / WEIGHTS)[0])


@functools.cache
def model_card(record: ModelRecord) -> dict:
    """The model card: what the model is, how it was trained, measured and calibrated (read
    once per model: every run needs its calibration). Do not change the dict."""
    return json.loads((record.directory / CARD).read_text())


def network_module(name: str) -> ModuleType:
    """The module that builds network ``name`` and says its inputs (``IO``)."""
    from gpu import cone_model, layer_model

    modules = {"cones": cone_model, "layers": layer_model}
    if name not in modules:
        raise ConfigurationError(f"no network called {name!r}; there are {sorted(modules)}")
    return modules[name]


@functools.cache
def load_network(record: ModelRecord, name: str):
    """Network ``name`` with its weights, on the CPU, ready for a predictor."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = (record.directory / WEIGHTS).read_bytes()
    if hashlib.sha256(data).hexdigest() != record.weights_sha256:
        raise ConfigurationError(f"the weights of model {record.model_id} in {record.directory} "
                                 "changed since they were recorded; restore them or register "
                                 "the new ones as a new model version")
    try:
        tensors = load(data)
    except SafetensorError as error:
        raise ConfigurationError(f"model {record.model_id}: {WEIGHTS} is not a safetensors "
                                 f"file ({error})") from None
    prefix = f"{name}."
    state = {key[len(prefix):]: value for key, value in tensors.items()
             if key.startswith(prefix)}
    if not state:
        raise ConfigurationError(f"model {record.model_id} has no {name!r} network; retrain it "
                                 "with `aomas train`")
    network = network_module(name).build_network()
    network.load_state_dict(state)
    return network.eval()


def write_model(directory: Path, networks: dict, card: dict) -> ModelRecord:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({f"{name}.{key}": tensor.contiguous() for name, network in networks.items()
               for key, tensor in network.state_dict().items()}, directory / WEIGHTS,
              metadata={"networks": ",".join(networks)})
    card = {**card, "weights_sha256": sha256_of(directory / WEIGHTS)[0]}
    (directory / CARD).write_text(json.dumps(card, indent=1) + "\n")
    model_record.cache_clear()
    model_card.cache_clear()
    return model_record(str(directory))


# -- the registry: every model version the appliance knows, immutable once registered ----------

# SHADOW, CANARY and PRODUCTION are held through the routing pointers (appliance.lifecycle);
# RETIRED: replaced as production; ROLLED_BACK: taken off its pointer by a rollback.
STAGING, SHADOW, CANARY, PRODUCTION, RETIRED, ROLLED_BACK = (
    "STAGING", "SHADOW", "CANARY", "PRODUCTION", "RETIRED", "ROLLED_BACK")
STAGES = (STAGING, SHADOW, CANARY, PRODUCTION, RETIRED, ROLLED_BACK)
# What a card must say before its model is registered (Mitchell et al. 2019, trimmed to what
# a reviewer of this appliance needs); "parent" may be null, the rest may not be empty.
REQUIRED_CARD_FIELDS = ("model_id", "version", "parent", "data_hash", "intended_use",
                        "trained_on", "held_out_metrics", "limitations", "weights_sha256")
MAX_CARD_BYTES = 1 << 20


def check_card(card: object) -> dict:
    """The card, or InvalidInput saying what is missing."""
    if not isinstance(card, dict):
        raise InvalidInput("a model card is a JSON object")
    missing = [name for name in REQUIRED_CARD_FIELDS if name not in card
               or (name != "parent" and card[name] in (None, "", [], {}))]
    if missing:
        raise InvalidInput(f"the model card lacks {', '.join(missing)}; see "
                           f"{BOOTSTRAP_DIR.name}/{CARD} for a complete one")
    if not isinstance(card["model_id"], str) or not MODEL_ID.fullmatch(card["model_id"]):
        raise InvalidInput("model_id must be 1-64 letters, digits, '.', '_' or '-'")
    return card


def check_weights(data: bytes, card: dict) -> str:
    """The weights' SHA-256 when they are a safetensors file with a tensor for every network
    and the checksum the card states; else InvalidInput. Nothing of it is executed."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != card["weights_sha256"]:
        raise InvalidInput(f"the weights' SHA-256 is {sha256}, the card says "
                           f"{card['weights_sha256']}: the file was changed or is another one")
    try:
        networks = {key.split(".")[0] for key in load(data)}
    except SafetensorError as error:
        raise InvalidInput(f"the weights are not a safetensors file ({error}); pickled "
                           "PyTorch files are refused, they can run code") from None
    if networks != {"cones", "layers"}:
        raise InvalidInput(f"the weights hold networks {sorted(networks)}; a model needs "
                           "cones and layers")
    return sha256


def register(db: sqlite_utils.Database, store: ObjectStore, card: dict, weights: bytes, *,
             actor: str, stage: str = STAGING,
             reason: str = "registered") -> tuple[dict[str, Any], bool]:
    """Register a model version: weights checked and stored by their SHA-256, the card kept
    with it; return (model, created). The same id with the same weights again changes nothing;
    with other weights it is refused: versions never change, a new one gets a new id."""
    card = check_card(card)
    sha256 = check_weights(weights, card)
    existing = get_model(db, card["model_id"], missing_ok=True)
    if existing is not None:
        if existing["weights_sha256"] != sha256:
            raise Conflict(f"model {card['model_id']} is registered with other weights; "
                           "versions are immutable: give the new one its own model_id")
        return existing, False
    store.put_bytes(weights)
    now = time.time()
    with write_transaction(db):
        db["models"].insert({
            "model_id": card["model_id"], "version": str(card["version"]),
            "parent": card["parent"], "weights_sha256": sha256,
            "card": json.dumps(card, sort_keys=True), "stage": stage,
            "registered_at": now, "registered_by": actor})
        db["model_events"].insert({"model_id": card["model_id"], "at": now, "actor": actor,
                                   "from_stage": None, "to_stage": stage, "reason": reason,
                                   "action": "register"})
        if stage == PRODUCTION:  # the bundled model at `aomas init`, while none is production
            db["model_pointers"].insert({"pointer": "production", "model_id": card["model_id"],
                                         "since": now})
        audit.record(db, actor=actor, action="model.register", object_kind="model",
                     object_id=card["model_id"], detail={"weights_sha256": sha256,
                                                         "stage": stage})
    return get_model(db, card["model_id"]), True


def register_directory(db: sqlite_utils.Database, store: ObjectStore, directory: Path, *,
                       actor: str, **options) -> tuple[dict[str, Any], bool]:
    """``register`` a model directory (``weights.safetensors`` + ``model_card.json``)."""
    for name in (WEIGHTS, CARD):
        if not (directory / name).is_file():
            raise InvalidInput(f"{directory} has no {name}; a model directory holds {WEIGHTS} "
                               f"and {CARD} (`aomas train` writes one)")
    try:
        card = json.loads((directory / CARD).read_text())
    except ValueError as error:
        raise InvalidInput(f"{directory / CARD} is not JSON ({error})") from None
    return register(db, store, card, (directory / WEIGHTS).read_bytes(), actor=actor, **options)


def model_directory(store: ObjectStore, data_dir: Path, model: dict[str, Any]) -> Path:
    """The version as a model directory: the stored weights, checked again on load, and its
    card. Named by a hash of id and weights (never by the id itself, which came from a card):
    two ids may share weights, and each directory holds its own card."""
    name = hashlib.sha256(f"{model['model_id']}\n{model['weights_sha256']}".encode())
    directory = data_dir / "models" / name.hexdigest()
    if not (directory / WEIGHTS).is_file():
        directory.mkdir(parents=True, exist_ok=True)
        staged = directory / f"{WEIGHTS}.partial"
        shutil.copyfile(store.path_for(model["weights_sha256"]), staged)
        (directory / CARD).write_text(json.dumps(model["card"], indent=1))
        os.replace(staged, directory / WEIGHTS)
    return directory


def list_models(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return [_shown(row) for row in db["models"].rows_where(order_by="registered_at")]


def get_model(db: sqlite_utils.Database, model_id: str, *,
              missing_ok: bool = False) -> dict[str, Any] | None:
    rows = list(db["models"].rows_where("model_id = ?", [model_id]))
    if not rows:
        if missing_ok:
            return None
        raise NotFound(f"no model {model_id}; `aomas model list` shows the registered ones")
    model = _shown(rows[0])
    model["history"] = list(db["model_events"].rows_where("model_id = ?", [model_id],
                                                           order_by="id"))
    return model


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "card": json.loads(row["card"])}
