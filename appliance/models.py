"""Models: the bundled bootstrap cone model, or a site's own, as weights + model card.

A model is a directory with ``weights.pt`` (a state dict) and ``model_card.json``. The run
manifest records its id and the SHA-256 of its weights; a worker refuses to run a model whose
weights differ from what the manifest names.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from appliance.exceptions import ConfigurationError
from appliance.storage import sha256_of

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "models" / "cones-bootstrap-v1"
WEIGHTS, CARD = "weights.pt", "model_card.json"


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
def load_network(record: ModelRecord):
    """The network with its weights, on the CPU, ready for a predictor."""
    import torch

    from gpu.cone_model import build_network

    network = build_network()
    network.load_state_dict(torch.load(record.directory / WEIGHTS, weights_only=True))
    return network.eval()


def write_model(directory: Path, network, card: dict) -> ModelRecord:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), directory / WEIGHTS)
    card = {**card, "weights_sha256": sha256_of(directory / WEIGHTS)[0]}
    (directory / CARD).write_text(json.dumps(card, indent=1) + "\n")
    model_record.cache_clear()
    return model_record(str(directory))
