"""PostgreSQL connections give up on a silent peer after DATABASE_DEAD_PEER_SECONDS, at both ends."""

import pytest
from django.db import connection

from budgetsvc.database import postgresql_dead_peer_options


def test_both_ends_give_up_on_a_silent_peer_after_about_the_seconds_given():
    options = postgresql_dead_peer_options({}, seconds=60)

    assert options["tcp_user_timeout"] == 60_000
    idle, interval, count = options["keepalives_idle"], options["keepalives_interval"], options["keepalives_count"]
    assert idle + interval * count == 60
    assert options["options"] == "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"


def test_what_the_database_url_sets_wins_and_its_server_options_are_kept():
    given = {"keepalives_idle": 5, "options": "-c search_path=budgets"}
    options = postgresql_dead_peer_options(given, seconds=60)

    assert options["keepalives_idle"] == 5
    assert options["options"].endswith(" -c search_path=budgets")
    assert options["options"].startswith("-c tcp_keepalives_idle=30 ")


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="session keepalives are PostgreSQL's")
def test_the_server_keeps_the_sessions_keepalives():
    with connection.cursor() as cursor:
        cursor.execute("SHOW tcp_keepalives_count")
        assert cursor.fetchone()[0] == "3"
