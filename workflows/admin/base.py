"""Pieces shared by the admin modules."""

from decimal import ROUND_HALF_EVEN, Decimal

from django.contrib import admin

MICRO_USD = Decimal("0.000001")


class ReadOnlyAdminMixin:
    """History is written by the service only: the admin shows it and never edits it."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    show_change_link = True

    def get_readonly_fields(self, request, obj=None):
        return self.fields


def format_usd(amount: Decimal | None, places: int | None = None) -> str:
    """`$1,234.50`: at least 2 and at most 6 decimals, so micro-dollar step costs stay visible.

    `places` fixes the decimals, for labels that must line up (a chart axis).
    """
    if amount is None:
        return "—"
    amount = amount.quantize(MICRO_USD, rounding=ROUND_HALF_EVEN)
    if places is None:
        exponent = amount.normalize().as_tuple().exponent
        places = min(6, max(2, -exponent if isinstance(exponent, int) else 2))
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.{places}f}"
