"""The stdio MCP server of tests/mcp_servers.py, run as `python tests/mcp_stdio_server.py`."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: tests/ is a package

from tests.mcp_servers import stdio_tool_server  # noqa: E402


def babble(size: int) -> None:
    sys.stdout.buffer.write(b"x" * size)
    sys.stdout.buffer.flush()
    time.sleep(60)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--babble"]:
        babble(int(sys.argv[2]))
    else:
        stdio_tool_server().run("stdio")
