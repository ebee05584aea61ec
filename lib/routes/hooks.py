"""Checks an `Endpoint` runs before its route (`Endpoint.before`), in declaration order."""

from lib import errors, maintenance


def maintenance_gate() -> None:
    """503 `maintenance` with Retry-After while maintenance mode is on. Cached per process
    (lib.maintenance.CACHE_S): no round trip on most warm requests."""
    state = maintenance.current()
    if state.on:
        raise errors.MaintenanceMode(state.message or None,
                                     headers={"Retry-After": str(state.retry_after_s)})
