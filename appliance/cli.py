"""The appliance's commands, and what every command shares (``with_config``).

The commands are plain click commands; ``ui.cli`` puts them, the groups of
``appliance.access.commands`` and ``outbox_commands``, and its own ``web`` and ``serve`` into
the one ``aomas`` group, in one table. Every command takes ``--config PATH`` (before or after
its name) and exits non-zero with a one-line reason on failure.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

import click

from appliance import health, registry, routing, runs
from appliance.access import accounts
from appliance.config import SETTINGS, Config, load_config, reference_markdown
from appliance.demo.study import write_phantom_study
from appliance.exceptions import AomasError
from appliance.registry import BOOTSTRAP_DIR, model_record
from appliance.services import build, open_data_dir, start_scp, start_worker
from dicom import redaction
from dicom.send import dicom_files, send_files
from gpu.phantom import PhantomSpec
from gpu.phantom_b import INTENSITY_MAPPINGS, FamilyBSpec
from gpu.phantoms import FAMILIES

CONFIG_HELP = "TOML file (default: $AOMAS_CONFIG, ./aomas.toml, /etc/aomas/aomas.toml)."


def with_config(command):
    """Add ``--config`` and turn AomasError into a one-line reason and exit status 2. The
    command's own ``--config`` wins over the group's (``aomas --config PATH <command>``)."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
    @functools.wraps(command)
    def wrapper(config_path, **kwargs):
        config_path = config_path or click.get_current_context().find_root().params.get(
            "config_path")
        try:
            config = load_config(config_path)
            setup_logging(config)
            return command(config, **kwargs)
        except AomasError as error:
            raise click.ClickException(str(error)) from None

    return wrapper


def local_time(epoch: float) -> str:
    """Seconds since 1970 as this box's local time, for tables a person reads."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def setup_logging(config: Config) -> None:
    logging.basicConfig(level=config.appliance.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redaction.install()   # no patient data in any line, a library's included
    # pynetdicom logs every PDU at INFO; our own lines say what matters.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("huey").setLevel(logging.WARNING)
    # highdicom narrates every attribute it copies; urllib3 every retry while Orthanc starts.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)


@click.command()
@click.option("--admin-user", default="admin", show_default=True)
@click.option("--admin-password-file", type=click.Path(exists=True, dir_okay=False),
              help="File holding the admin password (unattended installs).")
@with_config
def init(config: Config, admin_user: str, admin_password_file: str | None) -> None:
    """Create the data dir, migrate the database, create the first admin, register the bundled
    model. Safe to repeat."""
    databases, store = open_data_dir(config)
    db = databases.get()
    generated = admin_password_file is None
    password = (accounts.generate_password() if generated
                else Path(admin_password_file).read_text().strip())
    created = accounts.create_user(db, admin_user, password, "admin", actor="aomas init")
    click.echo(f"data dir {config.data_dir} ready")
    if created and generated:
        click.echo(f"admin account '{admin_user}' created; password (shown once): {password}")
    elif created:
        click.echo(f"admin account '{admin_user}' created")
    else:
        click.echo(f"admin account '{admin_user}' already exists; left unchanged")
    # The bundled model is production while no other model is configured (pipeline.model_dir)
    # and the registry names no production version yet.
    in_use = not config.pipeline.model_dir and "production" not in routing.pointers(db)
    model, registered = registry.register_directory(
        db, store, BOOTSTRAP_DIR, actor="aomas init",
        stage=registry.PRODUCTION if in_use else registry.STAGING,
        reason="bundled with the appliance" + (": the model runs use" if in_use else ""))
    click.echo(f"bundled model {model['model_id']} "
               f"{'registered' if registered else 'already registered'} ({model['stage']})")


@click.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--split-frames", is_flag=True, help="One instance per B-scan instead of one.")
@click.option("--eccentricity", default=3.0, show_default=True, type=float,
              help="Retinal eccentricity in degrees (sets cone density).")
@click.option("--size", default="128x160x128", show_default=True,
              help="B-scans x depth x A-lines.")
@click.option("--motion-um", default=3.0, show_default=True, type=float,
              help="RMS lateral eye motion in micrometres.")
@click.option("--family", type=click.Choice(FAMILIES), default="A", show_default=True,
              help="Phantom generator: A, or B (independently designed: rods, dark and "
                   "flickering cones, other speckle, PSF, mosaic and layers).")
@click.option("--intensity", type=click.Choice(INTENSITY_MAPPINGS), default="linear",
              show_default=True, help="Family B: stored linear, log (dB) or 8-bit log.")
@click.option("--pitch-um", default="1", show_default=True,
              help="Family B: A-line spacing, or FASTxSLOW (A-line x B-scan) in micrometres.")
@with_config
def phantom(config: Config, out_dir: str, seed: int, split_frames: bool, eccentricity: float,
            size: str, motion_um: float, family: str, intensity: str, pitch_um: str) -> None:
    """Write a synthetic AO-OCT study (OPT DICOM + ground truth)."""
    try:
        b_scans, depth, a_lines = (int(n) for n in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter("use B-SCANSxDEPTHxA-LINES, e.g. 128x160x128") from None
    try:
        pitches = [float(p) for p in pitch_um.lower().split("x")]
        fast, slow = pitches if len(pitches) == 2 else (pitches[0], pitches[0])
    except ValueError:
        raise click.BadParameter("use a pitch like 1 or 0.8x1.2 (µm)") from None
    if family == "A":
        if intensity != "linear" or (fast, slow) != (1.0, 1.0):
            raise click.BadParameter("--intensity and --pitch-um are family B's options")
        spec = PhantomSpec(seed=seed, b_scans=b_scans, depth=depth, a_lines=a_lines,
                           eccentricity_deg=eccentricity, motion_um=motion_um)
    else:
        spec = FamilyBSpec(seed=seed, b_scans=b_scans, depth=depth, a_lines=a_lines,
                           eccentricity_deg=eccentricity, motion_um=motion_um,
                           intensity=intensity, fast_pitch_um=fast, slow_pitch_um=slow)
    truth = write_phantom_study(Path(out_dir), spec, split_frames=split_frames)
    summary = truth["summary"]
    click.echo(f"wrote {len(truth['files'])} OPT file(s) to {out_dir}/dicom: {size}, family "
               f"{family}, {summary['cone_count']} cones "
               f"({summary['cone_density_per_mm2']:.0f}/mm²)")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--to", "destination", required=True, help="HOST:PORT of the receiving SCP.")
@click.option("--aet", default="AOMAS", show_default=True, help="Called AE title.")
@click.option("--calling-aet", default="AOMAS-SEND", show_default=True)
@with_config
def send(config: Config, paths: tuple[Path, ...], destination: str, aet: str,
         calling_aet: str) -> None:
    """C-STORE files (folders are searched) to any SCP."""
    host, port = _host_port(destination)
    results = send_files(dicom_files(paths), host, port, called_ae=aet, calling_ae=calling_aet)
    failed = [r for r in results if not r.ok]
    for r in failed:
        status = f"0x{r.status:04X}" if r.status is not None else "no status"
        click.echo(f"failed: {r.path} ({status}) {r.error}", err=True)
    click.echo(f"sent {len(results) - len(failed)} of {len(results)} file(s) to {destination}")
    if failed:
        sys.exit(1)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{text!r}: use HOST:PORT")
    return host, int(port)


@click.group(name="runs")
def runs_group() -> None:
    """Inspect runs."""


@runs_group.command(name="list")
@click.option("--state", type=click.Choice(runs.STATES))
@click.option("--limit", default=50, show_default=True)
@click.option("--study", "study_instance_uid", help="Only runs of this Study Instance UID.")
@click.option("--accession", "accession_number", help="Only runs of this accession number.")
@click.option("--json", "as_json", is_flag=True)
@with_config
def runs_list(config: Config, state: str | None, limit: int, study_instance_uid: str | None,
              accession_number: str | None, as_json: bool) -> None:
    """The newest runs first, with the study and series each one processed."""
    databases, _ = open_data_dir(config)
    rows = runs.list_runs(databases.get(), state=state, limit=limit,
                          study_instance_uid=study_instance_uid,
                          accession_number=accession_number)
    if as_json:
        click.echo(json.dumps([runs.as_json(run) for run in rows], indent=1))
        return
    click.echo(f"{'run':<34}{'case':>5}  {'state':<10}{'queued':<21}{'accession':<17}"
               f"{'modality':<9}{'acquired':<11}{'study / series instance UID':<66}reason")
    for run in rows:
        queued = local_time(run["queued_at"])
        study = run["study"]
        click.echo(f"{run['run_id']:<34}{run['case_id']:>5}  {run['state']:<10}{queued:<21}"
                   f"{study['accession_number'] or '-':<17}{study['modality'] or '-':<9}"
                   f"{study['acquisition_date'] or '-':<11}{study['study_instance_uid'] or '-':<66}"
                   f"{run['reason'] or ''}")
        click.echo(f"{'':<121}{study['series_instance_uid'] or '-'}")


@runs_group.command(name="show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@with_config
def runs_show(config: Config, run_id: str, as_json: bool) -> None:
    """One run: state, manifest, result."""
    databases, _ = open_data_dir(config)
    run = runs.get(databases.get(), run_id)
    if run is None:
        raise click.ClickException(f"no run {run_id}; `aomas runs list` shows the run ids")
    if as_json:
        click.echo(json.dumps(runs.as_json(run), indent=1))
        return
    for key in ("run_id", "case_id", "state", "attempts", "reason", "superseded_by"):
        click.echo(f"{key:>18}: {run[key] if run[key] is not None else ''}")
    for key, value in run["study"].items():
        click.echo(f"{key:>18}: {value if value is not None else ''}")
    shown = runs.as_json(run)
    if run["result"] is not None:
        review = run["result"].needs_review
        click.echo(f"{'needs review':>18}: "
                   + ("yes: " + "; ".join(review.reasons) if review.flag else "no"))
    click.echo(f"{'manifest':>18}: {json.dumps(shown['manifest'], sort_keys=True)}")
    click.echo(f"{'result':>18}: {json.dumps(shown['result'], sort_keys=True)}")


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--without-services", is_flag=True,
              help="Check only what needs no running service (database, queue, disk): an "
                   "installer's check before the services start.")
@with_config
def doctor(config: Config, as_json: bool, without_services: bool) -> None:
    """Check the box: database, queue, SCP, disk (same as GET /healthz)."""
    report = health.check(config, services=not without_services)
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        click.echo(f"config: {config.source}; data dir: {config.data_dir}")
        for name, state in report["components"].items():
            detail = ", ".join(f"{k}={v}" for k, v in state.items() if k != "ok")
            click.echo(f"{name:>6}: {'ok' if state['ok'] else 'FAIL'}  {detail}")
    if not report["ok"]:
        sys.exit(1)


@click.command(name="config")
@click.option("--reference", is_flag=True, help="Print the reference table (as in the README).")
@click.option("--json", "as_json", is_flag=True,
              help="Every effective setting as JSON (Ansible reads it to render the units).")
@with_config
def show_config(config: Config, reference: bool, as_json: bool) -> None:
    """Print the effective configuration (and so check it: a bad one exits 1)."""
    if reference:
        click.echo(reference_markdown())
        return
    sections = dict.fromkeys(s.section for s in SETTINGS)
    if as_json:
        click.echo(json.dumps({**{name: vars(getattr(config, name)) for name in sections},
                               "destinations": list(config.destinations)}, indent=1))
        return
    click.echo(f"# from {config.source}")
    for section in sections:
        click.echo(f"[{section}]")
        for key, value in vars(getattr(config, section)).items():
            click.echo(f"{key} = {json.dumps(value)}")
    for destination in config.destinations:
        click.echo("[[destinations]]")
        for key, value in destination.items():
            click.echo(f"{key} = {json.dumps(value)}")


@click.command()
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the run.")
@with_config
def demo(config: Config, seed: int, timeout: float) -> None:
    """Against a running appliance: send a phantom, wait for its run, print the result."""
    from appliance.demo.walkthrough import run_demo

    run_demo(config, seed=seed, timeout=timeout, log=click.echo)


@click.command(name="train")
@click.option("--out", "out_dir", default=str(BOOTSTRAP_DIR), show_default=True,
              type=click.Path(file_okay=False), help="Model directory to write.")
@click.option("--iterations", default=400, show_default=True)
@click.option("--train-seeds", default="100-123", show_default=True)
@click.option("--held-out-seeds", default="1-6", show_default=True)
@click.option("--family", type=click.Choice([*FAMILIES, "both"]), default="both",
              show_default=True, help="Phantom family to train on (held-out scoring is always "
                                      "on both: a cross-family result for a single family).")
@click.option("--from-reviews", is_flag=True,
              help="Fine-tune on this site's reviewed labels (plus phantoms at --train-seeds) "
                   "and register the result as STAGING (needs --model-id).")
@click.option("--model-id", default="", help="With --from-reviews: the new version's id.")
@click.option("--parent", default=None,
              help="With --from-reviews: the version to start from (default: production).")
@click.option("--phantom-seeds", default="100-107", show_default=True,
              help="With --from-reviews: phantoms of both families added to the labels.")
@click.option("--calibration-seeds", default="200-207", show_default=True,
              help="With --from-reviews: phantoms the calibration is fitted on.")
@with_config
def train_command(config: Config, out_dir: str, iterations: int, train_seeds: str,
                  held_out_seeds: str, family: str, from_reviews: bool, model_id: str,
                  parent: str | None, phantom_seeds: str, calibration_seeds: str) -> None:
    """Train the bootstrap cone and layer networks on phantoms, fit their calibration; write
    weights and a model card. With --from-reviews: a new version from the reviewed labels."""
    from appliance.evaluation import parse_seeds, table, train_bootstrap

    if from_reviews:
        from appliance import retraining

        if not model_id:
            raise click.UsageError("--from-reviews needs --model-id for the new version")
        databases, store = open_data_dir(config)
        model = retraining.train_from_reviews(
            databases.get(), store, config, actor="aomas train", model_id=model_id,
            parent_id=parent, iterations=iterations, phantom_seeds=phantom_seeds,
            calibration_seeds=calibration_seeds, log=click.echo)
        gate = model["card"]["gate_figures"]
        click.echo(f"registered {model['model_id']} as {model['stage']} (parent "
                   f"{model['parent']}); gate F1 {gate['f1_mean']:.3f}, ECE {gate['ece']:.3f}")
        return

    record, rows, pooled = train_bootstrap(
        Path(out_dir), iterations=iterations, train_seeds=parse_seeds(train_seeds),
        held_out_seeds=parse_seeds(held_out_seeds),
        families=FAMILIES if family == "both" else (family,), log=click.echo)
    click.echo(table(rows, pooled))
    click.echo(f"wrote {record.model_id} to {record.directory} "
               f"(weights sha256 {record.weights_sha256[:16]}…)")


@click.command(name="evaluate")
@click.option("--seeds", default="1-6", show_default=True, help="Phantom seeds, e.g. 1-10.")
@click.option("--family", type=click.Choice([*FAMILIES, "both"]), default="both",
              show_default=True, help="Phantom family to evaluate on (each seed in each).")
@click.option("--model", "model_dir", default="",
              help="Model directory (default: pipeline.model_dir, else the bootstrap).")
@with_config
def evaluate_command(config: Config, seeds: str, family: str, model_dir: str) -> None:
    """Run fresh phantoms through the pipeline's steps; print a table against ground truth."""
    from appliance.evaluation import evaluate, parse_seeds, table

    record = model_record(model_dir or config.pipeline.model_dir)
    click.echo(f"model {record.model_id} (weights sha256 {record.weights_sha256[:16]}…)")
    families = FAMILIES if family == "both" else (family,)
    click.echo(table(*evaluate(record, parse_seeds(seeds), families)))


@click.command()
@with_config
def scp(config: Config) -> None:
    """Run the DICOM SCP only (systemd: aomas-scp.service)."""
    server = start_scp(build(config))
    wait_for_signal()
    server.stop()


@click.command()
@with_config
def worker(config: Config) -> None:
    """Run the worker only (systemd: aomas-worker.service)."""
    running = start_worker(build(config))
    wait_for_signal()
    running.stop()


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    logging.getLogger(__name__).info("stopping")
