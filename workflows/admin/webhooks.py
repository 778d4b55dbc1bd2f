"""Alert webhooks: each delivery with the attempts made to send it."""

from django.contrib import admin
from django.db import models

from workflows.admin.base import ReadOnlyAdminMixin, ReadOnlyInline, TeamScopedAdmin
from workflows.models import WebhookAttempt, WebhookDelivery


class WebhookAttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    fields = ["number", "created_at", "status_code", "error", "duration_ms"]
    show_change_link = False  # an attempt has no page of its own


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = ["id", "team", "event", "url", "status", "attempts", "created_at", "finished_at"]
    list_filter = ["status", "team"]
    search_fields = ["url", "team__name", "event__type"]
    list_select_related = ["team", "event"]
    date_hierarchy = "created_at"
    inlines = [WebhookAttemptInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # Django 6's default, without its warning
