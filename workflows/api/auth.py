from rest_framework import authentication, exceptions, permissions

from workflows.definition.text import unsafe_text_problem
from workflows.models import ApiKey
from workflows.selectors import may_adjust_ledger, may_read_ledger
from workflows.services.teams import api_key_authenticate


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <team API key>`; `request.auth` is the ApiKey, its team the caller."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0].lower() != self.keyword.lower():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header must be 'Bearer <API key>'.")
        api_key = api_key_authenticate(raw_key=header[1])
        if api_key is None:
            raise exceptions.AuthenticationFailed("The API key is unknown or revoked.")
        return (None, api_key)

    def authenticate_header(self, request) -> str:
        return self.keyword


class StaffBasicAuthentication(authentication.BasicAuthentication):
    """HTTP Basic for the service's staff. Credentials no user name can hold (a NUL, which the database
    refuses) are refused before any lookup, and a user who is not active staff is told exactly what a
    wrong password is told: the endpoint confirms no one's password."""

    def authenticate_credentials(self, userid, password, request=None):
        if unsafe_text_problem(userid) or unsafe_text_problem(password):
            raise exceptions.AuthenticationFailed("Invalid username/password.")
        user, auth = super().authenticate_credentials(userid, password, request)
        if not user.is_staff:
            raise exceptions.AuthenticationFailed("Invalid username/password.")
        return user, auth


class HasTeamApiKey(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiKey)


class MayAdjustLedger(permissions.BasePermission):
    """A staff user allowed to adjust the ledger (selectors.may_adjust_ledger); a team API key is not one."""

    message = "Only staff users with the permission to add ledger entries may adjust the ledger; a team API key may not."

    def has_permission(self, request, view) -> bool:
        return may_adjust_ledger(user=request.user)


class MayReadLedger(permissions.BasePermission):
    """A staff user allowed to read the ledger (selectors.may_read_ledger); a team API key is not one."""

    message = "Only staff users with the permission to view ledger entries may read several teams' spend; a team API key may not."

    def has_permission(self, request, view) -> bool:
        return may_read_ledger(user=request.user)
