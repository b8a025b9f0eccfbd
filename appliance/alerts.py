"""Alerts: what a person must hear about (a model drifting, a rollback), delivered through an
outbox of their own to webhooks and e-mail.

``raise_alert`` records the alert and one delivery row per configured channel in the caller's
transaction; the worker's delivery thread (``deliver_due``) sends what is due and retries what
failed with a doubling delay, so an alert raised while the receiver is down arrives when it is
back. Webhooks get Alertmanager's webhook JSON (version 4), which Alertmanager receivers,
Grafana and Slack relays read; e-mail is plain text over SMTP. An alert names models, figures
and counts only: never a patient, a study UID or an accession number. The pages show a banner
while an alert is unresolved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import smtplib
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import sqlite_utils

from appliance import audit
from appliance.database import write_transaction
from appliance.exceptions import NotFound

log = logging.getLogger(__name__)

PENDING, SENT = "pending", "sent"
WEBHOOK, EMAIL = "webhook", "email"
SEND_TIMEOUT_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 3600.0
WARNING, CRITICAL = "warning", "critical"


def raise_alert(db: sqlite_utils.Database, alerts_config, *, name: str, severity: str,
                summary: str, description: str = "",
                labels: dict[str, str] | None = None) -> int:
    """Record an alert and queue its deliveries; call inside the transaction of the change
    that raised it. Returns its id."""
    now = time.time()
    alert_id = db["alerts"].insert({
        "at": now, "name": name, "severity": severity, "summary": summary,
        "description": description, "labels": json.dumps(labels or {}, sort_keys=True),
    }).last_pk
    channels = [(WEBHOOK, url) for url in alerts_config.webhook_urls] + \
               [(EMAIL, address) for address in alerts_config.email_to]
    for channel, target in channels:
        db["alert_deliveries"].insert({
            "alert_id": alert_id, "channel": channel, "target": target, "state": PENDING,
            "attempts": 0, "next_attempt_at": now, "updated_at": now})
    log.warning("alert %s (%s): %s", name, severity, summary)
    return alert_id


def unresolved(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Alerts nobody has resolved yet, newest first (the pages' banner)."""
    return [shown(row) for row in db["alerts"].rows_where("resolved_at IS NULL",
                                                         order_by="id desc")]


def listing(db: sqlite_utils.Database, limit: int = 100) -> list[dict[str, Any]]:
    rows = db["alerts"].rows_where(order_by="id desc", limit=limit)
    return [_with_deliveries(db, row) for row in rows]


def resolve(db: sqlite_utils.Database, alert_id: int, *, actor: str) -> dict[str, Any]:
    """Mark the alert handled (its banner goes); audited. Resolving again changes nothing."""
    with write_transaction(db):
        rows = list(db["alerts"].rows_where("id = ?", [alert_id]))
        if not rows:
            raise NotFound(f"no alert {alert_id}")
        if rows[0]["resolved_at"] is None:
            db["alerts"].update(alert_id, {"resolved_at": time.time(), "resolved_by": actor})
            audit.record(db, actor=actor, action="alert.resolve", object_kind="alert",
                         object_id=str(alert_id), detail={"name": rows[0]["name"]})
    return _with_deliveries(db, db["alerts"].get(alert_id))


def shown(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "labels": json.loads(row["labels"] or "{}")}


def _with_deliveries(db: sqlite_utils.Database, row: dict[str, Any]) -> dict[str, Any]:
    return {**shown(row), "deliveries": list(db["alert_deliveries"].rows_where(
        "alert_id = ?", [row["id"]], select="channel, target, state, attempts, last_error",
        order_by="id"))}


def alertmanager_payload(alert: dict[str, Any], external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for one firing alert."""
    labels = {"alertname": alert["name"], "severity": alert["severity"], "service": "aomas",
              **alert["labels"]}
    starts = datetime.fromtimestamp(alert["at"], UTC).isoformat().replace("+00:00", "Z")
    fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "version": "4", "receiver": "aomas", "status": "firing",
        "groupKey": f"{{}}:{{alertname=\"{alert['name']}\"}}", "truncatedAlerts": 0,
        "groupLabels": {"alertname": alert["name"]}, "commonLabels": labels,
        "commonAnnotations": {"summary": alert["summary"],
                              "description": alert["description"] or ""},
        "externalURL": external_url,
        "alerts": [{"status": "firing", "labels": labels,
                    "annotations": {"summary": alert["summary"],
                                    "description": alert["description"] or ""},
                    "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": external_url, "fingerprint": fingerprint}],
    }


def deliver_due(db: sqlite_utils.Database, alerts_config, now: float | None = None
                ) -> dict[str, int]:
    """Send every due delivery once; returns counts by new state."""
    now = time.time() if now is None else now
    counts: dict[str, int] = {}
    due = list(db.query("SELECT d.*, a.at, a.name, a.severity, a.summary, a.description, "
                        "a.labels FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id "
                        "WHERE d.state = ? AND d.next_attempt_at <= ? ORDER BY d.id",
                        [PENDING, now]))
    for row in due:
        alert = shown({key: row[key] for key in ("at", "name", "severity", "summary",
                                                 "description", "labels")})
        try:
            if row["channel"] == WEBHOOK:
                _post(row["target"], alertmanager_payload(alert))
            else:
                _mail(row["target"], alert, alerts_config)
        except (OSError, smtplib.SMTPException, ValueError) as error:
            attempts = row["attempts"] + 1
            delay = min(alerts_config.retry_base_seconds * 2 ** (attempts - 1),
                        MAX_BACKOFF_SECONDS)
            with write_transaction(db):
                db["alert_deliveries"].update(row["id"], {
                    "attempts": attempts, "next_attempt_at": now + delay,
                    "last_error": str(error)[:300], "updated_at": time.time()})
            log.warning("alert %d to %s %s not delivered (%s); retry in %.0f s",
                        row["alert_id"], row["channel"], row["target"], error, delay)
            counts[PENDING] = counts.get(PENDING, 0) + 1
            continue
        with write_transaction(db):
            db["alert_deliveries"].update(row["id"], {
                "state": SENT, "attempts": row["attempts"] + 1, "last_error": None,
                "updated_at": time.time()})
        counts[SENT] = counts.get(SENT, 0) + 1
    return counts


def _post(url: str, body: dict[str, Any]) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"alerts.webhook_urls: {url!r} is not an http(s) URL")
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_SECONDS) as answer:
        if not 200 <= answer.status < 300:
            raise OSError(f"HTTP {answer.status}")


def _mail(address: str, alert: dict[str, Any], alerts_config) -> None:
    message = EmailMessage()
    message["From"], message["To"] = alerts_config.email_from, address
    message["Subject"] = f"[AOMAS {alert['severity']}] {alert['summary']}"
    lines = [alert["summary"], "", alert["description"] or "", ""]
    lines += [f"{key}: {value}" for key, value in sorted(alert["labels"].items())]
    message.set_content("\n".join(lines))
    with smtplib.SMTP(alerts_config.smtp_host, alerts_config.smtp_port,
                      timeout=SEND_TIMEOUT_SECONDS) as smtp:
        smtp.send_message(message)
