"""Alert webhooks: each delivery with the attempts made to send it, and a resend for the dead ones."""

from django.contrib import admin, messages
from django.db import models

from workflows.admin.base import ReadOnlyAdminMixin, ReadOnlyInline, TeamScopedAdmin
from workflows.models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from workflows.services.webhooks import webhook_deliveries_resend


class WebhookAttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    fields = ["number", "created_at", "status_code", "error", "duration_ms"]
    show_change_link = False  # an attempt has no page of its own


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = ["id", "team", "event", "url", "status", "attempts", "next_attempt_at", "created_at", "finished_at"]
    list_filter = ["status", "team"]
    search_fields = ["url", "team__name", "event__type"]
    list_select_related = ["team", "event"]
    date_hierarchy = "created_at"
    inlines = [WebhookAttemptInline]
    actions = ["resend"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # Django 6's default, without its warning

    # The rows stay read-only: a resend is the service's change, allowed to whoever may change deliveries.
    def has_resend_permission(self, request):
        return request.user.has_perm("workflows.change_webhookdelivery")

    @admin.action(description="Resend the selected dead deliveries", permissions=["resend"])
    def resend(self, request, queryset):
        dead = list(queryset.filter(status=DeliveryStatus.DEAD).values_list("pk", flat=True))
        resent = webhook_deliveries_resend(deliveries=dead, by=f"user:{request.user.username}")
        messages.success(request, f"{resent} dead deliveries resent, each with a fresh set of attempts.")
        if skipped := queryset.count() - len(dead):
            messages.warning(request, f"{skipped} selected deliveries are not dead and were left as they are.")
