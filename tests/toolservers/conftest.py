import pytest

from tests.mcp_servers import http_server
from workflows.toolservers import ServerConnection


@pytest.fixture(scope="module")
def http_url():
    with http_server("http") as url:
        yield url


@pytest.fixture(scope="module")
def sse_url():
    with http_server("sse") as url:
        yield url


@pytest.fixture(params=["http", "sse"])
def remote(request):
    """A connection to the test server, over each of the two HTTP transports in turn."""
    url = request.getfixturevalue(f"{request.param}_url")
    return ServerConnection(name="tools", transport=request.param, url=url, timeout_seconds=10)

