"""Request rates per API key (and per staff user), by scope, counted in the default cache.

A view names its scope in `throttle_scope`; otherwise reads (GET, HEAD, OPTIONS) count as `read` and
every other method as `write`. Rates come from API_THROTTLE_RATES, read at each request; a scope
without a rate is not throttled. DRF runs throttles after authentication, so these count only
requests whose credentials were accepted.
"""

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import SimpleRateThrottle

from workflows.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    def __init__(self):
        # The scope, and so the rate, is known only once the request and its view are.
        pass

    def allow_request(self, request, view) -> bool:
        self.scope = getattr(view, "throttle_scope", None) or ("read" if request.method in SAFE_METHODS else "write")
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

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
