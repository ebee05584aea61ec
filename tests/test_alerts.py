"""The runbook's alert thresholds: at a threshold is no alert, just past it is; through the
real dashboard on seeded rows, and through lib.alerts itself at the exact boundaries."""

from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest

from lib import alerts, monitoring
from tests.support import monitoring_data as data

NOW = datetime(2027, 1, 6, 12, 0, tzinfo=timezone.utc)
RECENT = NOW - timedelta(minutes=5)


def _alert(metric: str) -> dict | None:
    found = [a for a in monitoring.dashboard(now=NOW)["alerts"] if a["metric"] == metric]
    return found[0] if found else None


def _level(metric: str) -> str | None:
    alert = _alert(metric)
    return alert["level"] if alert else None


@pytest.mark.parametrize("requests,failed,expected", [
    (100, 1, None),           # exactly 1%
    (1000, 11, "warning"),    # 1.1%
    (100, 5, "warning"),      # exactly 5%
    (1000, 51, "critical"),   # 5.1%
])
def test_error_rate_thresholds(conn, org, requests, failed, expected):
    # Failed on the fallback provider without a fallback flag: only the error rate moves.
    data.generations(conn, org, RECENT, requests - failed, provider="anthropic")
    data.generations(conn, org, RECENT, failed, status="failed", provider="anthropic")
    assert _level("error_rate") == expected


@pytest.mark.parametrize("latency,expected", [(2000, None), (2001, "warning"), (5000, "warning"),
                                              (5001, "critical")])
def test_p95_latency_thresholds(conn, org, latency, expected):
    data.generations(conn, org, RECENT, 20, latency_ms=latency)
    assert _level("p95_latency_ms") == expected


@pytest.mark.parametrize("ips,expected", [(10, None), (11, "warning"), (50, "warning"),
                                          (51, "critical")])
def test_blocked_ips_per_hour_thresholds(conn, ips, expected):
    for index in range(ips):
        data.ip_block(conn, f"198.51.100.{index}", NOW - timedelta(minutes=59))
    data.ip_block(conn, "198.51.100.0", NOW - timedelta(minutes=30))  # same IP again: one IP
    data.ip_block(conn, "192.0.2.1", NOW - timedelta(minutes=61))     # older than an hour
    assert _level("blocked_ips_per_hour") == expected


@pytest.mark.parametrize("requests,openai_failed,expected", [
    (100, 5, None), (1000, 51, "warning"), (100, 20, "warning"), (1000, 201, "critical"),
])
def test_openai_error_thresholds(conn, org, requests, openai_failed, expected):
    data.generations(conn, org, RECENT, requests - openai_failed)
    data.generations(conn, org, RECENT, openai_failed, provider="anthropic", fallback=True)
    assert _level("openai_error_rate") == expected


def test_an_alert_carries_metric_value_level_threshold_and_window(conn, org):
    data.generations(conn, org, RECENT, 90)
    data.generations(conn, org, RECENT, 10, status="failed", provider="anthropic",
                     fallback=True)  # both providers failed: 10% errors, 10% OpenAI errors
    payload = monitoring.dashboard(now=NOW)
    assert payload["alerts"] == [
        {"metric": "error_rate", "value": 0.1, "level": "critical", "threshold": 0.05,
         "unit": "ratio", "window": "1h", "since": None},
        {"metric": "openai_error_rate", "value": 0.1, "level": "warning", "threshold": 0.05,
         "unit": "ratio", "window": "1h", "since": None}]


def test_rows_older_than_an_hour_do_not_alert(conn, org):
    data.generations(conn, org, NOW - timedelta(minutes=61), 10, status="failed", latency_ms=9000)
    data.generations(conn, org, RECENT, 10)
    assert monitoring.dashboard(now=NOW)["alerts"] == []


def test_no_traffic_is_no_alert():
    assert monitoring.dashboard(now=NOW)["alerts"] == []


@pytest.mark.pure
@pytest.mark.parametrize("metric,at,past", [
    ("error_rate", Fraction(1, 100), Fraction(101, 10000)),
    ("p95_latency_ms", 2000, 2000.5),
    ("blocked_ips_per_hour", 10, 11),
    ("openai_error_rate", Fraction(5, 100), Fraction(51, 1000)),
])
def test_warning_boundaries_are_exact(metric, at, past):
    threshold = next(t for t in alerts.THRESHOLDS if t.metric == metric)
    assert alerts.level(threshold, at) is None
    assert alerts.level(threshold, past) == "warning"
    assert alerts.level(threshold, threshold.critical) == "warning"
    assert alerts.level(threshold, None) is None


@pytest.mark.pure
def test_float_rounding_does_not_move_a_boundary():
    error_rate = next(t for t in alerts.THRESHOLDS if t.metric == "error_rate")
    assert alerts.level(error_rate, Fraction(7, 700)) is None   # 1% from counts
    assert Fraction(0.01) > Fraction(1, 100)                    # the binary float is above 1%...
    assert alerts.level(error_rate, 0.01) is None               # ...but means 1%
    assert alerts.level(error_rate, 0.0100001) == "warning"
