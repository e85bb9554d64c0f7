"""Alerts of the nightly DAG: a failed task or a run past its deadline is told to someone. Always
one clear log line (``LMREC ALERT {...}``); also a JSON POST to ``LMREC_ALERT_WEBHOOK`` and mail to
``LMREC_ALERT_EMAIL`` (Airflow's SMTP provider, connection ``smtp_default``) where set. An alert
names the DAG, run, task, logical date and the error's type and message; lmrec's error messages
never carry user text."""

from __future__ import annotations

import json
import logging
import urllib.request

from airflow.sdk import BaseNotifier

from lmrec.core.settings import Settings

log = logging.getLogger("lmrec.alerts")


def build_alert(context: dict, what: str) -> dict:
    """The alert's fields from an Airflow callback ``context``."""
    ti = context.get("ti") or context.get("task_instance")
    run = context.get("dag_run")
    exc = context.get("exception")
    return {"what": what, "dag_id": getattr(run, "dag_id", None) or getattr(ti, "dag_id", None),
            "run_id": getattr(run, "run_id", None) or getattr(ti, "run_id", None),
            "task_id": getattr(ti, "task_id", None), "logical_date": str(context.get("ds") or getattr(run, "logical_date", "")),
            "try_number": getattr(ti, "try_number", None),
            "error": f"{type(exc).__name__}: {exc}"[:2000] if exc is not None else None}


def send_alert(alert: dict, cfg: Settings | None = None, context: dict | None = None) -> list[str]:
    """Log the alert and send it where configured; returns the channels used. A channel that
    fails is logged, never raised: the alert must not hide the failure it reports."""
    cfg = cfg or Settings.from_env()
    log.error("LMREC ALERT %s", json.dumps(alert, default=str, sort_keys=True))
    sent = ["log"]
    if cfg.alert_webhook:
        body = json.dumps({"text": f"lmrec {alert['what']}: {alert['dag_id']} {alert['logical_date']} "
                                   f"task {alert['task_id']}: {alert['error']}", **alert}, default=str).encode()
        req = urllib.request.Request(cfg.alert_webhook, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (operator-configured URL)
                resp.read()
            sent.append("webhook")
        except OSError as exc:
            log.error("LMREC ALERT webhook %s failed: %s", cfg.alert_webhook, exc)
    if cfg.alert_email and context is not None:
        try:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            SmtpNotifier(to=cfg.alert_email, subject=f"lmrec {alert['what']}: {alert['dag_id']} {alert['logical_date']}",
                         html_content=f"<pre>{json.dumps(alert, default=str, indent=2)}</pre>").notify(context)
            sent.append("email")
        except Exception as exc:  # noqa: BLE001 (any SMTP failure: log it, keep the original failure visible)
            log.error("LMREC ALERT email to %s failed: %s", cfg.alert_email, exc)
    return sent


class FailureAlert(BaseNotifier):
    """Airflow notifier for ``on_failure_callback``: tells someone that a task or run failed."""

    def __init__(self, what: str = "task failed"):
        super().__init__()
        self.what = what

    def notify(self, context) -> None:
        send_alert(build_alert(context, self.what), context=context)


def run_failed(context: dict) -> None:
    """DAG-level ``on_failure_callback``: the run failed (a plain function: the DAG processor runs
    it with a serialized DAG, on which a notifier cannot render templates)."""
    send_alert(build_alert(context, "run failed"), context=context)


async def deadline_missed(context: dict, **kwargs) -> None:
    """DeadlineAlert callback (run by the triggerer): the run is still not done at its deadline."""
    import asyncio

    await asyncio.to_thread(send_alert, build_alert(context, f"run missed its deadline ({kwargs.get('hours')} h)"))
