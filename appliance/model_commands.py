"""``aomas model register|list|show|gate|promote|rollback`` and ``aomas drift check``: the
registry of model versions, their gates, promotion, rollback and drift, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from appliance import drift, gates, lifecycle, registry
from appliance.cli import local_time, with_config
from appliance.config import Config
from appliance.services import open_data_dir

ACTOR = "aomas model"  # the command line has no login; the audit names the tool
# Whoever runs it on the box administers the appliance: they may override a failed gate, with
# a reason, as an admin may on the page.
CLI_ACTOR = lifecycle.Actor(ACTOR, may_override=True)


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


@model_group.command(name="promote")
@click.argument("model_id")
@click.option("--stage", required=True, type=click.Choice(list(lifecycle.POINTER_OF)))
@click.option("--traffic-percent", type=int,
              help=f"A canary's share of studies (default {lifecycle.DEFAULT_CANARY_PERCENT}).")
@click.option("--override-reason", default="",
              help="Promote despite a failed gate; recorded and shown as an override.")
@with_config
def model_promote(config: Config, model_id: str, stage: str, traffic_percent: int | None,
                  override_reason: str) -> None:
    """Point STAGE at MODEL_ID: only when its gate passes (or with --override-reason)."""
    databases, _ = open_data_dir(config)
    model = lifecycle.promote(databases.get(), config, model_id, stage, actor=CLI_ACTOR,
                              traffic_percent=traffic_percent,
                              override_reason=override_reason)
    last = model["history"][-1]
    click.echo(f"{model_id} is {model['stage']}"
               + (f" ({last['traffic_percent']} % of studies)" if last["traffic_percent"]
                  else "") + f": {last['reason']}")


@model_group.command(name="rollback")
@click.argument("model_id")
@click.option("--reason", default="", help="Why; kept in the stage history.")
@with_config
def model_rollback(config: Config, model_id: str, reason: str) -> None:
    """Take MODEL_ID off every pointer; production goes back to the version before."""
    databases, _ = open_data_dir(config)
    _, _, message = lifecycle.rollback(databases.get(), model_id, actor=CLI_ACTOR,
                                       reason=reason, alerts_config=config.alerts)
    click.echo(message)


@click.group(name="drift")
def drift_group() -> None:
    """The production model on this site's reviewed labels, against its gate."""


@drift_group.command(name="check")
@click.option("--json", "as_json", is_flag=True)
@with_config
def drift_check(config: Config, as_json: bool) -> None:
    """Run the drift check now (the worker runs it every Monday) and record it."""
    databases, store = open_data_dir(config)
    report = drift.check(databases.get(), store, config, actor="aomas drift")
    if as_json:
        click.echo(json.dumps(report, indent=1, default=str))
        return
    since = local_time(report["window_start"])
    click.echo(f"{report['status']}: model {report['model_id']}, "
               f"{report.get('reviewed_cases') or 0} reviewed cases, "
               f"{report.get('reviewed_tiles') or 0} tiles since {since}")
    if report.get("ece") is not None:
        click.echo(f"detection ECE {report['ece']:.3f} (95 % {report['ece_low']:.3f}–"
                   f"{report['ece_high']:.3f}; gate {report['baseline_ece']}), F1 "
                   f"{report['f1']:.3f} (95 % {report['f1_low']:.3f}–{report['f1_high']:.3f}; "
                   f"gate {report['baseline_f1']})")
