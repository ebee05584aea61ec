"""A local stand-in for the Vercel cron scheduler (which never runs under `vercel dev`).

Reads `crons` from vercel.json and fires each job on its schedule (UTC, like Vercel) with
`ops.cron.fire`, i.e. GET + `Authorization: Bearer $CRON_SECRET`. `make dev` starts it when
CRON_SCHEDULER=1; on its own:

    python -m devtools.cron_scheduler [--url http://127.0.0.1:3000]
"""

import argparse
import json
import threading
from datetime import datetime, timezone

import httpx
from croniter import croniter

from ops import cron


def next_runs(jobs: dict[str, dict], after: datetime) -> dict[str, datetime]:
    """When each job fires next, strictly after `after` (an aware datetime)."""
    return {name: croniter(job["schedule"], after).get_next(datetime) for name, job in jobs.items()}


class CronScheduler(threading.Thread):
    """Fires every job on its schedule until `stop()`. Each firing runs on its own thread, so
    a long run never delays another job (overlaps are the lock's business, as on Vercel)."""

    def __init__(self, base_url: str, secret: str, jobs: dict[str, dict] | None = None):
        super().__init__(daemon=True, name="cron-scheduler")
        self.base_url, self.secret = base_url, secret
        self.jobs = cron.cron_jobs() if jobs is None else jobs
        self.fired: list[tuple[str, int | None]] = []  # (job, HTTP status or None when unreachable)
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        upcoming = next_runs(self.jobs, datetime.now(timezone.utc))
        while not self._stopped.is_set():
            name, when = min(upcoming.items(), key=lambda item: item[1])
            delay = (when - datetime.now(timezone.utc)).total_seconds()
            if delay > 0 and self._stopped.wait(delay):
                return
            threading.Thread(target=self._fire, args=(name,), daemon=True).start()
            upcoming[name] = next_runs({name: self.jobs[name]}, when)[name]

    def _fire(self, name: str) -> None:
        try:
            response = cron.fire(self.jobs[name]["path"], self.base_url, secret=self.secret)
            status, summary = response.status_code, response.text[:500]
        except httpx.HTTPError as exc:
            status, summary = None, type(exc).__name__
        self.fired.append((name, status))
        print(json.dumps({"event": "local_cron", "job": name, "status": status, "answer": summary}),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=cron.DEFAULT_URL)
    args = parser.parse_args()
    scheduler = CronScheduler(args.url, cron.cron_secret())
    for name, when in next_runs(scheduler.jobs, datetime.now(timezone.utc)).items():
        print(f"{name}: next run {when.isoformat()}", flush=True)
    scheduler.start()
    try:
        scheduler.join()
    except KeyboardInterrupt:
        scheduler.stop()


if __name__ == "__main__":
    main()
