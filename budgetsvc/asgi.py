"""The application the web process serves: `gunicorn budgetsvc.asgi --config python:budgetsvc.gunicorn`, with
uvicorn's worker class (docs/operations.md#the-web-server). Django's ASGI handler, inside an access log.

Under ASGI a request's synchronous code (the middleware, DRF's views) runs in a thread of the request's
own, while a stream (workflows/api/streams.py) waits on the event loop and holds no thread between polls.
"""

import logging
import os
import time

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "budgetsvc.settings")
# Each request's thread is new (asgiref's ThreadSensitiveContext): a database connection kept open for the
# thread's next request would never be used again, only left open until collected. Each request closes its own.
os.environ["DATABASE_CONN_MAX_AGE"] = "0"

access_logger = logging.getLogger("gunicorn.access")


def with_access_log(app):
    """One line per HTTP request, when the response has been sent: the fields gunicorn's access log has
    under its own workers (budgetsvc/logs.py), which it never writes for an ASGI worker. budgetsvc/gunicorn.py
    turns the logger off unless gunicorn was given an access log, as gunicorn does with its own."""

    async def logged(scope, receive, send):
        if scope["type"] != "http" or access_logger.disabled:
            return await app(scope, receive, send)
        started = time.monotonic()
        answered = {"status": None, "request_id": None}

        async def send_noting_the_answer(message):
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
                headers = dict(message.get("headers") or [])
                request_id = headers.get(b"X-Request-ID") or headers.get(b"x-request-id")
                answered["request_id"] = request_id.decode("latin-1") if request_id else None
            await send(message)

        try:
            await app(scope, receive, send_noting_the_answer)
        finally:
            duration_ms = round((time.monotonic() - started) * 1000)
            remote_addr = (scope.get("client") or ("-",))[0]
            path = scope.get("path", "")
            access_logger.info(
                '%s "%s %s" %s %sms', remote_addr, scope["method"], path, answered["status"] or "-", duration_ms,
                extra={
                    "request_id": answered["request_id"],
                    "http_method": scope["method"],
                    "path": path,
                    "status": answered["status"],
                    "duration_ms": duration_ms,
                    "remote_addr": remote_addr,
                },
            )  # fmt: skip

    return logged


application = with_access_log(get_asgi_application())
