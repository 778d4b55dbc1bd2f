"""/healthz, /readyz and /metrics: for load balancers, orchestrators and Prometheus, not for teams.

`ProbeMiddleware` answers them first in the middleware stack, before anything reads the Host
header: a load balancer probes by the instance's address, which ALLOWED_HOSTS need not list. No
session, no CSRF, no authentication by API key, no throttling; /metrics has its own bearer token.
"""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST

from workflows import metrics
from workflows.api.errors import error_body
from workflows.services.health import readiness_problems, scrape_figures

READINESS_CHECKS = ("database", "broker", "migrations", "sweeper")


def healthz(request) -> JsonResponse:
    """The process answers: nothing else is asked."""
    return JsonResponse({"status": "ok"})


def readyz(request) -> JsonResponse:
    problems = readiness_problems()
    if not problems:
        return JsonResponse({"status": "ready", "checks": dict.fromkeys(READINESS_CHECKS, "ok")})
    message = f"Not ready: {', '.join(sorted(problems))}."
    return JsonResponse(error_body("not_ready", message, problems), status=503)


def metrics_view(request) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    if not metrics.scrape_authorized(request.headers.get("Authorization", "")):
        response = JsonResponse(error_body("not_authenticated", "A valid metrics bearer token is required."), status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.exposition(scrape_figures=scrape_figures), content_type=CONTENT_TYPE_LATEST)


PROBES = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_view}


class ProbeMiddleware:
    """Answers the probe paths before the rest of the stack (put it first in MIDDLEWARE)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        probe = PROBES.get(request.path_info)
        if probe is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse(error_body("method_not_allowed", f'Method "{request.method}" not allowed.'), status=405)
            response["Allow"] = "GET, HEAD"
            return response
        response = probe(request)
        response["Cache-Control"] = "no-store"
        return response
