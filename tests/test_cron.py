"""What every cron route shares (lib.jobs.cron): CRON_SECRET auth, one run at a time, cron_runs."""

import json
import threading

import httpx
import pytest

from lib import config
from lib import jobs
from lib.jobs import cron
from tests.support.crons import SECRET, fire
from devtools.serve import serve_through_vercel_runtime

ROUTES = {"api/cron/weekly-reminders.py": "/api/cron/weekly-reminders",
          "api/cron/purge.py": "/api/cron/purge",
          "api/cron/alerts.py": "/api/cron/alerts"}


@pytest.fixture(params=list(ROUTES))
def route(request, serve, cron_secret):
    return serve(request.param), ROUTES[request.param]


@pytest.mark.parametrize("method,how", [("GET", "bearer"), ("POST", "bearer"), ("POST", "query")])
def test_the_right_secret_runs_the_job(route, method, how):
    url, path = route
    if how == "query":
        response = httpx.request(method, f"{url}{path}?secret={SECRET}", timeout=30)
    else:
        response = fire(url, path, method)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job"] == path.rsplit("/", 1)[1] and "complete" in body


@pytest.mark.parametrize("method,headers,query", [
    ("GET", {}, ""),
    ("POST", {}, ""),
    ("GET", {"authorization": "Bearer wrong-secret-wrong-secret"}, ""),
    ("POST", {"authorization": "Bearer wrong-secret-wrong-secret"}, ""),
    ("GET", {"authorization": f"Basic {SECRET}"}, ""),
    ("GET", {"authorization": f"Bearer {SECRET[:-1]}"}, ""),
    ("GET", {"authorization": f"Bearer {SECRET}x"}, ""),
    ("GET", {}, f"?secret={SECRET}"),  # the query form is for POST only
    ("POST", {}, "?secret=wrong"),
    ("POST", {}, "?secret="),
    ("GET", {"authorization": "Bearer ".encode() + "é".encode() * 40}, ""),
    ("GET", {"authorization": "Bearer " + "x" * 20000}, ""),
])
def test_wrong_or_missing_secret_is_401_and_runs_nothing(route, sql, method, headers, query):
    url, path = route
    response = httpx.request(method, f"{url}{path}{query}", headers=headers, timeout=30)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert sql.execute("SELECT count(*) AS n FROM cron_runs").fetchone()["n"] == 0


@pytest.mark.parametrize("value", [None, "too-short-secret"[:15]])
def test_unset_or_short_secret_fails_closed_with_a_clear_500(serve, monkeypatch, sql, value):
    if value is None:
        monkeypatch.delenv("CRON_SECRET", raising=False)
    else:
        monkeypatch.setenv("CRON_SECRET", value)
    config.reload()
    for entrypoint, path in ROUTES.items():
        url = serve(entrypoint)
        for method, query in (("GET", ""), ("POST", f"?secret={value}")):
            response = httpx.request(method, f"{url}{path}{query}",
                                     headers={"authorization": f"Bearer {value}"}, timeout=30)
            assert response.status_code == 500
            error = response.json()["error"]
            assert error["code"] == "config_error" and "CRON_SECRET" in error["message"]
            assert value is None or value not in response.text
    assert sql.execute("SELECT count(*) AS n FROM cron_runs").fetchone()["n"] == 0


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_verbs_are_405(route, method):
    url, path = route
    response = fire(url, path, method)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST, HEAD"


def test_no_secret_appears_in_any_log_line(route, capfd):
    url, path = route
    fire(url, path, "GET")
    httpx.post(f"{url}{path}?secret={SECRET}", timeout=30)
    fire(url, path, "GET", secret="wrong-" + SECRET)
    out = capfd.readouterr().out
    assert '"event": "cron_run"' in out
    assert SECRET not in out


def test_each_run_is_recorded_with_status_counts_and_times(serve, cron_secret, sql):
    url = serve("api/cron/purge.py")
    body = fire(url, "/api/cron/purge").json()
    run = sql.execute("SELECT * FROM cron_runs").fetchone()
    assert run["job"] == "purge" and run["status"] == "succeeded" and run["complete"] is True
    assert run["finished_at"] >= run["started_at"] and run["error"] is None
    assert run["counts"]["deleted"] == body["deleted"]


def test_a_failing_run_is_recorded_as_failed_with_its_error_class(cron_secret, sql):
    def work(budget):
        raise ZeroDivisionError("details stay out of the record")

    with pytest.raises(ZeroDivisionError):
        cron.run_exclusively("purge", work)
    run = sql.execute("SELECT * FROM cron_runs").fetchone()
    assert (run["status"], run["complete"], run["error"]) == ("failed", False, "ZeroDivisionError")
    assert run["finished_at"] is not None


def test_a_run_cut_off_mid_way_is_marked_interrupted_by_the_next(cron_secret, sql):
    sql.execute("INSERT INTO cron_runs (job, status) VALUES ('purge', 'running')")
    cron.run_exclusively("purge", lambda budget: {"complete": True})
    runs = sql.execute("SELECT status, error FROM cron_runs ORDER BY id").fetchall()
    assert runs[0]["status"] == "interrupted" and runs[0]["error"].startswith("interrupted")
    assert runs[1]["status"] == "succeeded"


def test_second_concurrent_run_is_skipped_and_does_nothing(serve, cron_secret, sql):
    url = serve("api/cron/purge.py")
    inside, release = threading.Event(), threading.Event()
    calls = []

    def slow_work(budget):
        calls.append(1)
        inside.set()
        release.wait(10)
        return {"complete": True}

    holder = threading.Thread(target=cron.run_exclusively, args=("purge", slow_work))
    holder.start()
    try:
        assert inside.wait(10)
        second = fire(url, "/api/cron/purge")
        assert second.status_code == 200
        assert second.json() == {"job": "purge", "skipped": "already running"}
        # the lock is per job: the other cron still runs meanwhile
        assert "skipped" not in cron.run_exclusively("weekly-reminders", lambda b: {"complete": True})
    finally:
        release.set()
        holder.join(10)
    assert calls == [1]
    statuses = [r["status"] for r in sql.execute(
        "SELECT status FROM cron_runs WHERE job = 'purge' ORDER BY id").fetchall()]
    assert sorted(statuses) == ["skipped", "succeeded"]
    # once the first run is over, the lock is free again
    assert "skipped" not in fire(url, "/api/cron/purge").json()


def test_lock_is_released_when_the_run_fails(cron_secret):
    with pytest.raises(RuntimeError):
        cron.run_exclusively("purge", lambda budget: (_ for _ in ()).throw(RuntimeError()))
    assert cron.run_exclusively("purge", lambda budget: {"complete": True})["complete"] is True


def test_budget_always_allows_one_unit_of_work_then_stops():
    budget = cron.Budget(0.000001)
    assert budget.keep_going() is True
    assert budget.keep_going() is False
    roomy = cron.Budget(60)
    assert all(roomy.keep_going() for _ in range(3))


def test_vercel_json_declares_every_cron_with_a_max_duration_above_the_budget():
    from devtools.services import ROOT

    config_file = json.loads((ROOT / "vercel.json").read_text())
    paths = {c["path"] for c in config_file["crons"]}
    assert paths == {jobs.path(job) for job in jobs.JOBS}
    budget = config.settings().cron_time_budget_s
    for entrypoint in (f"api/cron/{job}.py" for job in jobs.JOBS):
        assert config_file["functions"][entrypoint]["maxDuration"] >= budget + 10


@pytest.mark.slow
@pytest.mark.parametrize("entrypoint", list(ROUTES))
def test_cron_through_the_vercel_runtime_adapter(app_env, entrypoint, smtp):
    env = {**app_env, "CRON_SECRET": SECRET}  # SMTP_URL etc. come from os.environ (smtp fixture)
    path = ROUTES[entrypoint]
    with serve_through_vercel_runtime(entrypoint, env) as url:
        assert httpx.get(url + path, timeout=30).status_code == 401
        response = fire(url, path, "GET")
        assert response.status_code == 200, response.text
        assert response.json()["job"] == path.rsplit("/", 1)[1]
        assert httpx.post(f"{url}{path}?secret={SECRET}", timeout=30).status_code == 200
