"""``aomas model register|list|show|gate``: the registry of model versions and their gates,
from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from appliance import gates, registry
from appliance.cli import local_time, with_config
from appliance.config import Config
from appliance.services import open_data_dir

ACTOR = "aomas model"  # the command line has no login; the audit names the tool


@click.group(name="model")
def model_group() -> None:
    """Model versions: register one, list them, show one's card and history."""


@model_group.command(name="register")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@with_config
def model_register(config: Config, directory: Path) -> None:
    """Register the model in DIRECTORY (weights.safetensors + model_card.json) as STAGING."""
    databases, store = open_data_dir(config)
    model, created = registry.register_directory(databases.get(), store, directory,
                                                 actor=ACTOR)
    click.echo(f"model {model['model_id']} {'registered' if created else 'already registered'}"
               f" ({model['stage']}, weights sha256 {model['weights_sha256'][:16]}…)")


@model_group.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@with_config
def model_list(config: Config, as_json: bool) -> None:
    """Every registered model version, oldest first."""
    databases, _ = open_data_dir(config)
    models = registry.list_models(databases.get())
    if as_json:
        click.echo(json.dumps(models, indent=1))
        return
    click.echo(f"{'model':<28}{'version':<9}{'stage':<12}{'registered':<21}weights sha256")
    for model in models:
        when = local_time(model["registered_at"])
        click.echo(f"{model['model_id']:<28}{model['version']:<9}{model['stage']:<12}"
                   f"{when:<21}{model['weights_sha256'][:16]}…")


@model_group.command(name="gate")
@click.argument("model_id")
@with_config
def model_gate(config: Config, model_id: str) -> None:
    """Measure MODEL_ID on the frozen evaluation set (minutes) and record the gate's verdict."""
    databases, store = open_data_dir(config)
    click.echo(f"evaluating {model_id} on seeds {config.models.evaluation_seeds} of both "
               "phantom families …")
    result = gates.run_gate(databases.get(), store, config, model_id, actor=ACTOR)
    click.echo(f"F1 {result['f1_mean']:.3f} (95 % {result['f1_low']:.3f}–{result['f1_high']:.3f}"
               f"), worst {result['figures']['f1_min']:.3f} ({result['figures']['f1_min_phantom']}"
               f"); detection ECE {result['ece']:.3f} (95 % {result['ece_low']:.3f}–"
               f"{result['ece_high']:.3f}, family {result['figures']['ece_family']})")
    click.echo("passed" if result["passed"] else "failed: " + "; ".join(result["failures"]))


@model_group.command(name="show")
@click.argument("model_id")
@with_config
def model_show(config: Config, model_id: str) -> None:
    """One model version: its card, the history of its stage and its gate results."""
    databases, _ = open_data_dir(config)
    db = databases.get()
    click.echo(json.dumps({**registry.get_model(db, model_id),
                           "gate_results": gates.results(db, model_id)}, indent=1))
