"""Teams, their keys, budgets and the budget audit trail."""


from django import forms
from django.contrib import admin, messages
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from workflows import outbound
from workflows.admin.base import ReadOnlyAdminMixin, ReadOnlyInline, TeamScopedAdmin, TeamScopedInline, format_usd
from workflows.admin.reports import budget_bar, period_forecast
from workflows.errors import OutboundRefused, ValidationFailed
from workflows.models import (
    ApiKey,
    BudgetChange,
    DeliveryStatus,
    ProviderCredential,
    ProviderRoute,
    Team,
    TeamToolServer,
    ThresholdCrossing,
)
from workflows.services.alerts import check_webhook_url
from workflows.services.credentials import (
    check_base_url,
    check_credential_update,
    credential_set,
    credential_update,
    key_hint,
)
from workflows.services.tool_servers import (
    check_tool_server,
    check_tool_server_update,
    headers_from_lines,
    tool_server_set,
    tool_server_update,
)
from workflows.services.teams import (
    MAX_ALERT_THRESHOLD_PCT,
    TEAM_BUDGET_FIELDS,
    api_key_create,
    api_key_rename,
    api_key_revoke,
    check_team_budgets,
    team_budgets_update,
)
from workflows.services.webhooks import webhook_secret_rotate
from workflows.services.workflows import workflows_off_their_endpoint

# Each secret shown once; the message is the only place it appears.
SHOWN_ONCE = "copy it now; it is not shown again."


class PercentagesField(forms.CharField):
    """Alert thresholds typed as "50, 80, 100": whole percentages of a budget, 1 to 1000, each once.
    Given in any order, they are kept in ascending order; a "%" after a number, or the brackets of the
    stored list, are allowed."""

    default_error_messages = {
        "not_whole": "“%(value)s” is not a whole percentage: write whole numbers separated by commas, e.g. 50, 80, 100.",
        "out_of_range": f"%(value)s%% is out of range: each threshold must be from 1 to {MAX_ALERT_THRESHOLD_PCT}.",
        "repeated": "%(value)s%% is given more than once.",
    }

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(str(pct) for pct in value)
        return value

    def to_python(self, value):
        text = super().to_python(value).strip().removeprefix("[").removesuffix("]")
        percentages, errors = [], []
        for item in (part.strip().removesuffix("%").strip() for part in text.replace(";", ",").split(",")):
            if not item:
                continue
            if not item.isascii() or not item.isdigit():
                errors.append(forms.ValidationError(self.error_messages["not_whole"], params={"value": item}))
            elif not 1 <= int(item) <= MAX_ALERT_THRESHOLD_PCT:
                errors.append(forms.ValidationError(self.error_messages["out_of_range"], params={"value": int(item)}))
            elif int(item) in percentages:
                errors.append(forms.ValidationError(self.error_messages["repeated"], params={"value": int(item)}))
            else:
                percentages.append(int(item))
        if errors:
            raise forms.ValidationError(errors)
        return sorted(percentages)


class TeamAdminForm(forms.ModelForm):
    """The team form of TeamAdmin, which supplies the model and fields (hence no Meta)."""

    alert_thresholds = PercentagesField(
        required=False,
        label="Alert thresholds (%)",
        help_text="Percentages of a budget (the run's or the team's period budget) at which an alert is sent, "
        f"e.g. 50, 80, 100; each from 1 to {MAX_ALERT_THRESHOLD_PCT}. Empty: no alerts.",
        widget=forms.TextInput(attrs={"size": 30, "inputmode": "numeric"}),
    )
    change_reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why the budgets change; kept with each change in the budget audit trail.",
    )

    def budget_changes(self) -> dict:
        # The service spells "not set" None, where the form's blank choice is "".
        return {
            field: self.cleaned_data[field] if self.cleaned_data[field] != "" else None
            for field in self.changed_data
            if field in TEAM_BUDGET_FIELDS and field in self.cleaned_data
        }

    def clean_webhook_url(self):
        url = self.cleaned_data["webhook_url"]
        if "webhook_url" not in self.changed_data:
            return url  # checked when it was saved, and again at each delivery
        try:
            check_webhook_url(url=url)
        except OutboundRefused as exc:
            raise forms.ValidationError(exc.message) from None
        return url

    def clean(self):
        # The service's own check, so a change it would refuse is a form error here, not a server error on save.
        cleaned = super().clean()
        try:
            check_team_budgets(changes=self.budget_changes())
        except ValidationFailed as exc:
            for problem in exc.details:
                field = problem["path"].replace("defaults.", "default_")
                self.add_error(field if field in self.fields else None, problem["message"])
        return cleaned


class BudgetChangeInline(ReadOnlyInline):
    model = BudgetChange
    verbose_name_plural = "budget audit trail"
    fields = ["created_at", "actor", "field", "old_value", "new_value", "reason", "run", "workflow"]


class ProviderRouteInline(TeamScopedInline):
    model = ProviderRoute
    extra = 0
    verbose_name_plural = "provider routes"
    fields = ["provider", "backend", "default_model"]


class WriteOnlyTextarea(forms.Textarea):
    """A text area that never shows a value, neither a stored one nor one sent back with an error."""

    def format_value(self, value):
        return None


class TeamToolServerForm(forms.ModelForm):
    """A registered MCP server. Its headers are written, never shown: the field starts empty, and
    left empty it keeps the stored headers. Saved through the services, which check and encrypt."""

    headers = forms.CharField(
        required=False,
        strip=False,
        widget=WriteOnlyTextarea(attrs={"rows": 2, "cols": 40, "autocomplete": "off"}),
        help_text="One 'Name: value' a line, e.g. 'Authorization: Bearer …'. Stored encrypted; "
        "leave empty to keep the current headers.",
    )
    url = forms.URLField(assume_scheme="https", max_length=TeamToolServer._meta.get_field("url").max_length)

    class Meta:
        model = TeamToolServer
        fields = ["name", "transport", "url"]

    def clean_headers(self):
        try:
            return headers_from_lines(self.cleaned_data["headers"]) or None
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.details[0]["message"]) from None

    def clean(self):
        cleaned = super().clean()
        if self.errors or not self.has_changed():
            return cleaned
        headers = cleaned.get("headers")
        try:
            check_tool_server(name=cleaned["name"], transport=cleaned["transport"], url=cleaned["url"], headers=headers)
            if self.instance.pk is not None:
                check_tool_server_update(server=self.instance, url=cleaned["url"], headers=headers)
        except ValidationFailed as exc:
            # OutboundRefused too. A header's problem is reported at the headers, by its name only.
            for problem in exc.details:
                field = problem["path"].split(".")[0]
                self.add_error(field if field in self.fields else None, problem["message"])
        return cleaned

    def save(self, commit=True):
        # The inline's team is set by the formset before this. The stored ciphertext never reaches the form.
        data = self.cleaned_data
        fields = {"name": data["name"], "transport": data["transport"], "url": data["url"]}
        if self.instance.pk is None:
            saved = tool_server_set(team=self.instance.team, headers=data["headers"] or {}, **fields)
        else:
            saved = tool_server_update(server=self.instance, headers=data["headers"], **fields)
        self.instance = saved
        return saved


class TeamToolServerInline(TeamScopedInline):
    model = TeamToolServer
    form = TeamToolServerForm
    extra = 0
    verbose_name_plural = "registered MCP servers"
    fields = ["name", "transport", "url", "headers", "headers_hint", "updated_at"]
    readonly_fields = ["headers_hint", "updated_at"]


@admin.register(Team)
class TeamAdmin(TeamScopedAdmin):
    form = TeamAdminForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # webhooks are sent over HTTPS
    list_display = [
        "name",
        "default_budget_usd",
        "default_budget_mode",
        "period_budget_usd",
        "period",
        "period_mode",
        "created_at",
    ]
    list_filter = ["default_budget_mode", "period", "period_mode"]
    search_fields = ["name"]
    readonly_fields = ["webhook_secret_hint", "dead_webhook_deliveries"]
    filter_horizontal = ["staff"]
    # Staff of a team must not add others to it, nor let it price its own calls below the table.
    superuser_only_fields = ("staff", "may_override_prices", "may_run_scripts")
    inlines = [ProviderRouteInline, TeamToolServerInline, BudgetChangeInline]
    actions = ["rotate_webhook_secret"]
    fieldsets = [
        (None, {"fields": ["name"]}),
        (
            "Run defaults",
            {
                "description": "Used when neither the run request nor the workflow sets a limit.",
                "fields": [
                    "default_budget_usd",
                    "default_budget_mode",
                    "default_max_iterations",
                    "default_timeout_seconds",
                ],
            },
        ),
        (
            "Period budget",
            {
                "description": "One budget for all of the team's runs together, per calendar period (UTC).",
                "fields": ["period_budget_usd", "period", "period_mode"],
            },
        ),
        ("Alerts", {"fields": ["alert_thresholds", "webhook_url", "webhook_secret_hint", "dead_webhook_deliveries"]}),
        (
            "Staff",
            {
                "description": "Staff users who are not superusers see and change only the rows of the teams "
                "they are listed on here.",
                "fields": ["staff"],
            },
        ),
        (
            "Prices",
            {
                "description": "The price table wins for every real provider, unless the team may override it.",
                "fields": ["may_override_prices"],
            },
        ),
        (
            "Script steps",
            {
                "description": "Conductor's script steps run commands on the step workers, which a team may "
                "do only once an operator allows it.",
                "fields": ["may_run_scripts"],
            },
        ),
    ]
    change_reason_fieldset = ("Audit trail", {"fields": ["change_reason"]})

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # The checks of the webhook URL and of the registered MCP servers' URLs look their hosts up:
        # before the admin's transaction, not inside it.
        urls = [request.POST.get("webhook_url", "")]
        urls += [value for key, value in request.POST.items() if key.startswith("tool_servers-") and key.endswith("-url")]
        with outbound.resolved_in_advance(urls):
            return super().changeform_view(request, object_id, form_url, extra_context)

    # A new team has no budgets to change yet: no reason to give and no trail to show.
    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        return [*fieldsets, self.change_reason_fieldset] if obj else fieldsets

    def get_inlines(self, request, obj):
        return self.inlines if obj else []

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            status = budget_bar(team=obj)
            context |= {
                "budget_status": status,
                "budget_figures": {
                    name: format_usd(getattr(status, name))
                    for name in ("budget_usd", "spent_usd", "reserved_usd", "lifetime_usd")
                },
                **period_forecast(obj),
                "team_filter": f"team__id__exact={obj.pk}",
            }
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="Webhook secret")
    def webhook_secret_hint(self, team: Team) -> str:
        hint = (
            f"{key_hint(team.webhook_secret)}: shown once, when the team is created and each time the secret is "
            "rotated (the action “Rotate the webhook secret” of the team list)."
        )
        expires_at = team.webhook_previous_secret_expires_at
        if team.webhook_previous_secret and expires_at > timezone.now():
            hint += (
                f" The previous secret, {key_hint(team.webhook_previous_secret)}, signs every attempt too until "
                f"{expires_at:%Y-%m-%d %H:%M:%S} UTC."
            )
        return hint

    @admin.display(description="Dead webhook deliveries")
    def dead_webhook_deliveries(self, team: Team) -> str:
        dead = team.webhook_deliveries.filter(status=DeliveryStatus.DEAD).count()
        if not dead:
            return "none"
        url = reverse("admin:workflows_webhookdelivery_changelist")
        return format_html(
            '<a href="{}?team__id__exact={}&amp;status__exact=dead"><strong class="errornote">{} dead: '
            "no attempts left</strong></a> (resend them from the list)",
            url,
            team.pk,
            dead,
        )

    @admin.action(description="Rotate the webhook secret", permissions=["change"])
    def rotate_webhook_secret(self, request, queryset):
        for team in queryset.order_by("pk"):
            rotation = webhook_secret_rotate(team=team, actor=f"user:{request.user.username}")
            until = (
                f"The previous secret signs every attempt too, beside the new one, until "
                f"{rotation.previous_signs_until:%Y-%m-%d %H:%M:%S} UTC."
                if rotation.previous_signs_until
                else "The previous secret no longer signs."
            )
            messages.warning(
                request, f"The new webhook secret of team {team.name} is {rotation.secret} — {SHOWN_ONCE} {until}"
            )

    def save_model(self, request, obj, form, change):
        if not change:
            super().save_model(request, obj, form, change)
            messages.warning(request, f"The webhook secret of team {obj.name} is {obj.webhook_secret} — {SHOWN_ONCE}")
            return
        # Budget changes go through the service, which records them in the audit trail. The rest is
        # saved field by field: a full save would write back fields, such as the audit re-arm point,
        # that workers change meanwhile.
        changes = form.budget_changes()
        if changes:
            team_budgets_update(
                team=obj, changes=changes, actor=f"user:{request.user.username}", reason=form.cleaned_data["change_reason"]
            )
        # Many-to-many fields (staff) are saved with the form's relations, after this.
        concrete = {field.name for field in Team._meta.concrete_fields}
        others = [field for field in form.changed_data if field not in changes and field in concrete]
        if others:
            obj.save(update_fields=others)


@admin.register(ApiKey)
class ApiKeyAdmin(TeamScopedAdmin):
    list_display = ["prefix", "name", "team", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["team", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "team__name"]
    fields = ["team", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            api_key_rename(api_key=obj, name=obj.name)
            return
        api_key, raw_key = api_key_create(team=obj.team, name=obj.name)
        obj.pk = api_key.pk
        messages.warning(request, f"The new key is {raw_key} — {SHOWN_ONCE}")

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


@admin.register(BudgetChange)
class BudgetChangeAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = ["created_at", "actor", "team", "run", "workflow", "field", "old_value", "new_value", "reason"]
    list_filter = ["field", "team", ("run", admin.EmptyFieldListFilter), ("workflow", admin.EmptyFieldListFilter)]
    search_fields = ["actor", "reason", "team__name", "run__id", "workflow__name"]
    list_select_related = ["team", "run", "workflow__team"]
    date_hierarchy = "created_at"

    def changelist_view(self, request, extra_context=None):
        # The model is named for one row; the list is the trail operators look for.
        return super().changelist_view(request, {"title": "Budget audit trail", **(extra_context or {})})


@admin.register(ThresholdCrossing)
class ThresholdCrossingAdmin(ReadOnlyAdminMixin, TeamScopedAdmin):
    list_display = ["created_at", "team", "scope", "threshold_pct", "run", "period_start", "budget_usd", "spent_usd"]
    list_filter = ["scope", "threshold_pct", "team"]
    search_fields = ["team__name", "run__id"]
    list_select_related = ["team", "run"]
    date_hierarchy = "created_at"


class ProviderCredentialForm(forms.ModelForm):
    """The key is written, never shown: the field starts empty, and left empty it keeps the stored key."""

    api_key = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted. Leave empty to keep the current key.",
    )
    base_url = forms.URLField(required=False, assume_scheme="https", help_text="Empty: the provider's own endpoint.")

    class Meta:
        model = ProviderCredential
        fields = ["team", "provider", "base_url"]

    def clean_base_url(self):
        # Always: saving goes through credential_set, which checks it too.
        url = self.cleaned_data["base_url"]
        try:
            check_base_url(url=url)
        except OutboundRefused as exc:
            raise forms.ValidationError(exc.message) from None
        return url

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is None:
            if not cleaned.get("api_key"):
                self.add_error("api_key", "A new credential needs its API key.")
        elif "base_url" in cleaned:
            # The service's own check, so a change it would refuse is a form error here.
            try:
                check_credential_update(
                    credential=self.instance, base_url=cleaned["base_url"], api_key=cleaned.get("api_key", "")
                )
            except ValidationFailed as exc:
                self.add_error("api_key", exc.details[0]["message"])
        return cleaned


# How many workflows a warning names before it counts the rest.
_NAMED_AT_MOST = 10


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(TeamScopedAdmin):
    form = ProviderCredentialForm
    list_display = ["team", "provider", "api_key_hint", "base_url", "updated_at"]
    list_filter = ["provider"]
    search_fields = ["team__name"]
    readonly_fields = ["api_key_hint", "updated_at"]
    fields = ["team", "provider", "api_key", "api_key_hint", "base_url", "updated_at"]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # The base URL's check looks its host up: before the admin's transaction, not inside it.
        with outbound.resolved_in_advance([request.POST.get("base_url", "")]):
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_readonly_fields(self, request, obj=None):
        # A key belongs to its provider too (its team is fixed by the base class).
        readonly = super().get_readonly_fields(request, obj)
        return [*readonly, "provider"] if obj is not None else readonly

    def save_model(self, request, obj, form, change):
        # Through the services, which encrypt; the form never sees the stored ciphertext.
        api_key = form.cleaned_data.get("api_key", "")
        if change:
            saved = credential_update(credential=obj, base_url=obj.base_url, api_key=api_key)
        else:
            saved = credential_set(team=obj.team, provider=obj.provider, api_key=api_key, base_url=obj.base_url)
        obj.pk, obj.api_key_encrypted, obj.api_key_hint = saved.pk, saved.api_key_encrypted, saved.api_key_hint
        if stranded := workflows_off_their_endpoint(team=obj.team):
            shown = ", ".join(f"'{name}'" for name in stranded[:_NAMED_AT_MOST])
            more = f" and {len(stranded) - _NAMED_AT_MOST} more" if len(stranded) > _NAMED_AT_MOST else ""
            self.message_user(
                request,
                f"Runs of {shown}{more} will be refused as they start: each names an endpoint (base_url) or a wire "
                "(type) that the team's credentials and routes no longer fit. Point the credentials back, or "
                "upload versions that name the new endpoint.",
                messages.WARNING,
            )
