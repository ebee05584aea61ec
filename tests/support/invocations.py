"""When a served request's invocation is over, not only its answer.

lib.http runs `Response.after` (a generation's accounting, its idempotent replay) once the
answer is written, before the handler returns; the platform ends the invocation only then
(the runtime's "end" message). A test that reads the database right after a 200 waits for
that end, as anything reading the platform's effects would: `Invocations.wait_idle()`."""

import threading


class Invocations:
    def __init__(self) -> None:
        self._running = 0
        self._changed = threading.Condition()

    def wrap(self, handler: type) -> type:
        invocations = self

        class Counted(handler):
            def _dispatch(self):
                with invocations._changed:
                    invocations._running += 1
                try:
                    return super()._dispatch()
                finally:
                    with invocations._changed:
                        invocations._running -= 1
                        invocations._changed.notify_all()

        Counted.__name__ = Counted.__qualname__ = handler.__name__
        Counted.__module__ = handler.__module__
        return Counted

    def wait_idle(self, timeout: float = 30) -> None:
        """Return once no served request is still running (its after-answer work included)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._running == 0, timeout):
                raise TimeoutError(f"{self._running} invocations still running after {timeout} s")
