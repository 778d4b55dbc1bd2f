from rest_framework.pagination import CursorPagination


class NewestFirstCursorPagination(CursorPagination):
    # Ids never change, so a client paging through never sees an item twice or misses one.
    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 200


class OldestFirstCursorPagination(NewestFirstCursorPagination):
    """For a run's events, steps, ledger and checkpoints, which read as a story."""

    ordering = "id"
