"""budgetsvc's client side, apart from the service: the typed API client (`budgetsvc_client.client`) and
the `budgetsvc` command on it (`budgetsvc_client.cli`, also `python -m budgetsvc_client`). It imports
nothing of the service (no Django, no Celery): only httpx2, PyYAML and, for the command, rich."""
