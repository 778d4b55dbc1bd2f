"""The admin, where operators set team budgets and read spend; history is shown, never edited.

Each module registers its ModelAdmins on `admin.site` when imported; autodiscover imports this package.
"""

from workflows.admin import runs, spend, teams, webhooks  # noqa: F401
