"""The runbook's "Alerting Thresholds", in this one place, and their evaluation.

| Metric            | Warning | Critical |
|-------------------|---------|----------|
| Error rate        | >1%     | >5%      |
| Response time P95 | >2s     | >5s      |
| Blocked IPs/hour  | >10     | >50      |
| OpenAI errors     | >5%     | >20%     |
| Provider misconfigured (requests/hour, issue 12) | - | >0 |
| Billing conflicts | >0/hour | >10/hour |

Billing conflicts (issue 11 §3) are Stripe events naming an organization that conflicts with
an existing link: applied to nobody, so each one is a payment an operator must look at.

A metric alerts when its value is strictly above a threshold (exactly 1% is not > 1%).
Values are compared as exact fractions (a float at its shortest decimal form), so a rate
computed from counts is never misjudged by float rounding at the boundary.
"""

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Threshold:
    metric: str
    warning: Fraction
    critical: Fraction
    unit: str  # "ratio" (0..1), "ms" or "count"


THRESHOLDS = (
    Threshold("error_rate", Fraction(1, 100), Fraction(5, 100), "ratio"),
    Threshold("p95_latency_ms", Fraction(2000), Fraction(5000), "ms"),
    Threshold("blocked_ips_per_hour", Fraction(10), Fraction(50), "count"),
    Threshold("openai_error_rate", Fraction(5, 100), Fraction(20, 100), "ratio"),
    # A key, model or parameter the provider refuses: every request falls back (or fails)
    # until someone fixes the configuration, so one is already critical.
    Threshold("provider_misconfigured", Fraction(0), Fraction(0), "count"),
    Threshold("billing_conflicts", Fraction(0), Fraction(10), "count"),
)


def level(threshold: Threshold, value: Fraction | int | float | None) -> str | None:
    """"critical", "warning" or None (below both thresholds, or no data)."""
    if value is None:
        return None
    # A float is taken at its shortest decimal form: Fraction(0.01) is slightly above 1/100.
    exact = Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    if exact > threshold.critical:
        return "critical"
    if exact > threshold.warning:
        return "warning"
    return None


def evaluate(values: dict[str, Fraction | int | float | None], window: str,
             states: dict[str, dict] | None = None) -> list[dict]:
    """One `{"metric", "value", "level", "threshold", "window", "since"}` per metric above a
    threshold, critical ones first. `values` maps metric names of THRESHOLDS to their current
    value (missing or None = no data, never an alert). `states` is the alerts cron's record
    (`{metric: {"level", "since"}}`, lib.jobs.alerts): `since` is when the metric entered its
    level, or None while the cron hasn't seen that level yet. Pure: no I/O."""
    states = states or {}
    alerts = []
    for threshold in THRESHOLDS:
        value = values.get(threshold.metric)
        found = level(threshold, value)
        if found:
            limit = threshold.critical if found == "critical" else threshold.warning
            state = states.get(threshold.metric) or {}
            since = state.get("since") if state.get("level") == found else None
            alerts.append({"metric": threshold.metric, "value": _plain(value), "level": found,
                           "threshold": _plain(limit), "unit": threshold.unit, "window": window,
                           "since": since})
    return sorted(alerts, key=lambda alert: alert["level"] != "critical")


def _plain(value) -> float | int:
    if isinstance(value, Fraction):
        return int(value) if value.denominator == 1 else round(float(value), 6)
    return value
