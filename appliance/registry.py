"""Models: the bundled bootstrap model, or a site's own, as weights + model card.

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
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from appliance.exceptions import ConfigurationError
from appliance.storage import sha256_of

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "models" / "aomas-bootstrap-v3"
WEIGHTS, CARD = "weights.safetensors", "model_card.json"


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
