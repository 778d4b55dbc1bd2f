"""One exchange with a server (connect, initialize, one request, close), and what cut it short.

The SDK runs its transports' requests in tasks of their own and logs, rather than raises, much of
what goes wrong in them: a refused address or a lost connection would otherwise surface as a
request that waits out its timeout. So the transports here tell the exchange what stopped them, and
that cancels the whole exchange at once with a message fit for the run's owner."""

import anyio

from workflows.toolservers import ServerConnection


class Exchange:
    def __init__(self, server: ServerConnection):
        self.server = server
        self.scope = anyio.CancelScope(deadline=anyio.current_time() + server.timeout_seconds)
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        """End the exchange now; the first reason given is the one told."""
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()

    def timed_out(self) -> str:
        return f"{self.server.name} did not answer within {self.server.timeout_seconds:g} seconds."

    def why_cancelled(self) -> str:
        return self.reason or self.timed_out()
