"""Promotion and rollback: moving the pointers that route studies (``appliance.routing``).

A version is promoted to SHADOW, CANARY (with the share of studies it takes) or PRODUCTION
only when its latest gate result on the current evaluation set passes the current thresholds
(``appliance.gates``); otherwise the promotion is refused with the failing figure, unless an
admin overrides it with a written reason, which is recorded and shown as "promoted by
override". A version holds one pointer at a time; the version it displaces from production is
RETIRED, from shadow or canary back to STAGING.

A rollback takes a version off every pointer in one transaction: canary traffic to 0, and when
it was production, production back to the previous production version in the event history.
Its stage becomes ROLLED_BACK; a second rollback changes nothing and says so. Runs already
dispatched keep their version (their manifest names it) and are shown as "from a rolled-back
version", with a re-run.

Every change is one ``model_events`` row (who, when, from, to, why, the gate result it was
judged by) and one audit event, in the transaction that moves the pointer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance import alerts, audit, gates, registry
from appliance.config import Config
from appliance.database import write_transaction
from appliance.exceptions import Conflict, GateFailed, InvalidInput, NotPermitted
from appliance.limits import MAX_TEXT_CHARS
from appliance.registry import (
    CANARY,
    PRODUCTION,
    RETIRED,
    ROLLED_BACK,
    SHADOW,
    STAGING,
)

POINTER_OF = {PRODUCTION: "production", CANARY: "canary", SHADOW: "shadow"}
STAGE_OF = {pointer: stage for stage, pointer in POINTER_OF.items()}
PROMOTE, OVERRIDE, ROLLBACK, TRAFFIC, REPLACED = (
    "promote", "override", "rollback", "traffic", "replaced")
DEFAULT_CANARY_PERCENT = 10


@dataclass(frozen=True)
class Actor:
    """Who asks, and whether they may override a failed gate (admins only)."""

    name: str
    may_override: bool = False


def promote(db: sqlite_utils.Database, config: Config, model_id: str, stage: str, *,
            actor: Actor, traffic_percent: int | None = None,
            override_reason: str = "") -> dict[str, Any]:
    """Point ``stage``'s pointer at the version; return the version as the registry shows it."""
    if stage not in POINTER_OF:
        raise InvalidInput(f"a version is promoted to {', '.join(POINTER_OF)}, not {stage!r}")
    percent = _traffic(stage, traffic_percent)
    override_reason = override_reason.strip()
    if len(override_reason) > MAX_TEXT_CHARS:
        raise InvalidInput(f"a reason is limited to {MAX_TEXT_CHARS} characters")
    with write_transaction(db):
        model = registry.get_model(db, model_id)
        gate = judged(db, config, model_id)
        if not gate["passed"]:
            if not override_reason:
                raise GateFailed(f"{model_id} may not become {stage}: {gate['verdict']}. An "
                                 "admin may override with a written reason")
            if not actor.may_override:
                raise NotPermitted(f"{model_id} failed its gate ({gate['verdict']}); only an "
                                   "admin may override a gate")
        action = OVERRIDE if not gate["passed"] else PROMOTE
        reason = override_reason or f"gate passed ({gate['verdict']})"
        pointer = POINTER_OF[stage]
        if model["stage"] == stage:
            if stage != CANARY or _pointer(db, pointer)["traffic_percent"] == percent:
                return registry.get_model(db, model_id)  # already there: nothing to record
            action = TRAFFIC
        else:
            if model["stage"] in POINTER_OF:  # one pointer per version: it leaves its old one
                db["model_pointers"].delete(POINTER_OF[model["stage"]])
            _displace(db, pointer, model_id, actor.name)
        db["model_pointers"].upsert({"pointer": pointer, "model_id": model_id,
                                     "traffic_percent": percent, "since": time.time()},
                                    pk="pointer")
        _event(db, model_id, actor.name, model["stage"], stage, reason, action=action,
               traffic_percent=percent, gate_result_id=gate["id"])
        audit.record(db, actor=actor.name, action=f"model.{action}", object_kind="model",
                     object_id=model_id, detail={"stage": stage, "traffic_percent": percent,
                                                 "gate_result_id": gate["id"],
                                                 "gate": gate["verdict"]})
    return registry.get_model(db, model_id)


def rollback(db: sqlite_utils.Database, model_id: str, *, actor: Actor, reason: str = "",
             alerts_config=None) -> tuple[dict[str, Any], bool, str]:
    """Take the version off every pointer; return (version, changed, what happened). With
    ``alerts_config`` the rollback is also an alert (people who did not press it hear)."""
    reason = reason.strip() or "rolled back"
    if len(reason) > MAX_TEXT_CHARS:
        raise InvalidInput(f"a reason is limited to {MAX_TEXT_CHARS} characters")
    with write_transaction(db):
        model = registry.get_model(db, model_id)
        if model["stage"] == ROLLED_BACK:
            return model, False, f"{model_id} was already rolled back; nothing changed"
        if model["stage"] not in POINTER_OF:
            raise Conflict(f"{model_id} is {model['stage']} and serves no studies; there is "
                           "nothing to roll back")
        said = [f"{model_id} rolled back from {model['stage']}"]
        if model["stage"] == PRODUCTION:
            previous = previous_production(db, model_id)
            if previous is None:
                raise Conflict(f"{model_id} is the only version that was ever production; "
                               "promote another version instead of rolling this one back")
            canary = _pointer(db, "canary")
            if canary and canary["traffic_percent"]:
                db["model_pointers"].update("canary", {"traffic_percent": 0})
                _event(db, canary["model_id"], actor.name, CANARY, CANARY,
                       f"canary traffic to 0: production {model_id} rolled back",
                       action=TRAFFIC, traffic_percent=0)
                said.append(f"canary {canary['model_id']} traffic to 0 %")
            db["model_pointers"].update("production", {"model_id": previous["model_id"],
                                                       "since": time.time()})
            _event(db, previous["model_id"], actor.name, previous["stage"], PRODUCTION,
                   f"restored: {model_id} rolled back ({reason})", action=ROLLBACK)
            said.append(f"production is {previous['model_id']} again")
        else:
            db["model_pointers"].delete(POINTER_OF[model["stage"]])
        _event(db, model_id, actor.name, model["stage"], ROLLED_BACK, reason, action=ROLLBACK)
        audit.record(db, actor=actor.name, action="model.rollback", object_kind="model",
                     object_id=model_id, detail={"from_stage": model["stage"],
                                                 "reason": reason})
        if alerts_config is not None:
            alerts.raise_alert(db, alerts_config, name="ModelRolledBack",
                               severity=alerts.WARNING, summary="; ".join(said),
                               description=f"by {actor.name}: {reason}",
                               labels={"model_id": model_id, "from_stage": model["stage"]})
    return registry.get_model(db, model_id), True, "; ".join(said)


def judged(db: sqlite_utils.Database, config: Config, model_id: str) -> dict[str, Any]:
    """The version's latest gate result on the current evaluation set, judged by the current
    thresholds: {id, passed, verdict}. No result on this set is a failed gate."""
    the_set = gates.evaluation_set(config.models.evaluation_seeds)
    result = next((row for row in gates.results(db, model_id)
                   if row["evaluation_set_sha256"] == the_set["sha256"]), None)
    if result is None:
        return {"id": None, "passed": False,
                "verdict": "no gate result on the current evaluation set (run "
                           f"`aomas model gate {model_id}`)"}
    passed, failures = gates.verdict(result["figures"], config.models.gate_min_f1,
                                     config.models.gate_max_ece)
    shown = "; ".join(failures) if failures else (
        f"F1 {result['f1_mean']:.2f}, ECE {result['ece']:.3f}")
    return {"id": result["id"], "passed": passed, "verdict": shown}


def previous_production(db: sqlite_utils.Database, model_id: str) -> dict[str, Any] | None:
    """The version that was production most recently before, other than ``model_id`` and not
    rolled back itself."""
    for (candidate,) in db.execute(
            "SELECT model_id FROM model_events WHERE to_stage = ? AND model_id != ? "
            "ORDER BY id DESC", [PRODUCTION, model_id]).fetchall():
        model = registry.get_model(db, candidate)
        if model["stage"] != ROLLED_BACK:
            return model
    return None


def rolled_back(db: sqlite_utils.Database) -> set[str]:
    """Ids of the versions rolled back (their runs are shown as such)."""
    return {row["model_id"] for row in db["models"].rows_where("stage = ?", [ROLLED_BACK],
                                                               select="model_id")}


def _traffic(stage: str, traffic_percent: int | None) -> int | None:
    if stage != CANARY:
        if traffic_percent is not None:
            raise InvalidInput("traffic_percent is for a canary only")
        return None
    percent = DEFAULT_CANARY_PERCENT if traffic_percent is None else traffic_percent
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise InvalidInput("traffic_percent must be a whole number from 1 to 100")
    return percent


def _pointer(db: sqlite_utils.Database, pointer: str) -> dict[str, Any] | None:
    rows = list(db["model_pointers"].rows_where("pointer = ?", [pointer]))
    return rows[0] if rows else None


def _displace(db, pointer: str, newcomer: str, actor: str) -> None:
    """The version holding ``pointer`` steps down: RETIRED from production, else STAGING."""
    holder = _pointer(db, pointer)
    if holder is None or holder["model_id"] == newcomer:
        return
    before = STAGE_OF[pointer]
    after = RETIRED if before == PRODUCTION else STAGING
    db["models"].update(holder["model_id"], {"stage": after})
    _event(db, holder["model_id"], actor, before, after, f"replaced by {newcomer}",
           action=REPLACED)


def _event(db, model_id: str, actor: str, from_stage: str | None, to_stage: str, reason: str,
           *, action: str, traffic_percent: int | None = None,
           gate_result_id: int | None = None) -> None:
    db["models"].update(model_id, {"stage": to_stage})
    db["model_events"].insert({"model_id": model_id, "at": time.time(), "actor": actor,
                               "from_stage": from_stage, "to_stage": to_stage,
                               "reason": reason, "action": action,
                               "traffic_percent": traffic_percent,
                               "gate_result_id": gate_result_id})


def overridden(db: sqlite_utils.Database) -> set[str]:
    """Ids of the versions whose current stage came from an override of a failed gate."""
    latest = db.execute(
        "SELECT model_id, action FROM model_events e WHERE id = (SELECT MAX(id) FROM "
        "model_events WHERE model_id = e.model_id AND to_stage != from_stage)").fetchall()
    return {model_id for model_id, action in latest if action == OVERRIDE}
