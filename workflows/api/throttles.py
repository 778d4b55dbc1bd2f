"""Request rates per API key (and per staff user), by scope, counted in the default cache.

A view names its scope in `throttle_scope`; otherwise reads (GET, HEAD, OPTIONS) count as `read` and
every other method as `write`. Rates come from API_THROTTLE_RATES, read at each request; a scope
without a rate is not throttled. DRF runs throttles after authentication, so these count only
requests whose credentials were accepted.
"""

import logging

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import SimpleRateThrottle

from workflows.models import ApiKey

logger = logging.getLogger(__name__)


class ApiKeyRateThrottle(SimpleRateThrottle):
    def __init__(self):
        # The scope, and so the rate, is known only once the request and its view are.
        pass

    def allow_request(self, request, view) -> bool:
        self.scope = getattr(view, "throttle_scope", None) or ("read" if request.method in SAFE_METHODS else "write")
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except Exception:  # noqa: BLE001 - the cache's client raises its own errors
            # The cache is down: the API goes on unthrottled rather than failing every request.
            logger.warning("The throttle's cache did not answer; %s request let through.", self.scope, exc_info=True)
            return True

    def wait(self) -> float:
        # DRF's answer is None when the history is longer than the rate allows (the rate was lowered):
        # the oldest request that still counts against the rate tells when one more may come.
        remaining = self.duration - (self.now - self.history[self.num_requests - 1])
        return max(remaining, 1)

    def get_rate(self) -> str | None:
        return settings.API_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view) -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = f"key-{request.auth.pk}"
        elif request.user is not None and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            return None
        return self.cache_format % {"scope": self.scope, "ident": ident}
