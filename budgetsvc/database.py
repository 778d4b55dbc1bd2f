"""How the service connects to PostgreSQL."""


def postgresql_dead_peer_options(options: dict, *, seconds: int) -> dict:
    """`options` (the connection's, from DATABASE_URL) with a silent peer given up on after about
    `seconds`, at both ends; what DATABASE_URL sets itself wins.

    The worker's side: keepalive probes while the connection is idle, and tcp_user_timeout while a
    query waits to be acknowledged, so a query of a worker cut off from the network fails and is
    retried instead of hanging. The server's side, set for this session alone: PostgreSQL ends the
    session of a worker that vanished, and its steps' attempt locks with it, so another worker can
    take their steps over (docs/operations.md).
    """
    idle, interval, count = max(1, seconds // 2), max(1, seconds // 6), 3
    server = f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval} -c tcp_keepalives_count={count}"
    given = options.get("options", "")
    return {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": seconds * 1000,
        **options,
        "options": f"{server} {given}".strip(),
    }
