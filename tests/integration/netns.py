"""A network namespace joined to the host by a veth pair, and TCP relays into it: a worker machine
whose network a test can cut and restore (tests/integration/test_partition.py).

PostgreSQL and Redis listen on the host's loopback only, so a process in the namespace reaches them
through a `Relay` listening on the host end of the veth. Everything here needs root, iproute2 and
the kernel's blackhole qdisc.
"""

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

# The relay's stand-in for PostgreSQL's tcp_keepalives_idle/interval/count (docs/operations.md),
# short so that a cut link is noticed in about 3 to 6 s.
KEEPALIVE_IDLE_SECONDS = 3
KEEPALIVE_INTERVAL_SECONDS = 1
KEEPALIVE_COUNT = 3


class NetworkUnavailable(Exception):
    """This machine cannot build the namespace (no iproute2, not root, no blackhole qdisc, ...)."""


def _ip(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Link:
    namespace: str
    host_device: str
    namespace_device: str
    host_address: str

    def exec_prefix(self) -> tuple[str, ...]:
        """The command prefix that runs a program inside the namespace."""
        return ("ip", "netns", "exec", self.namespace)

    def pids(self) -> set[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.namespace], check=True, capture_output=True, text=True)
        return {int(pid) for pid in listed.stdout.split()}

    def cut(self) -> None:
        """Drop every packet both ways, as a dead switch does. Both devices stay up and keep their
        routes: downing the host's end would send the host's packets for the namespace out of the
        default route, and downing the namespace's end would fail its connects at once with
        ENETUNREACH. Neither side's kernel sees anything, so nothing is closed or reset."""
        _ip("tc", "qdisc", "add", "dev", self.host_device, "root", "blackhole")
        _ip(*self.exec_prefix(), "tc", "qdisc", "add", "dev", self.namespace_device, "root", "blackhole")

    def restore(self) -> None:
        _ip("tc", "qdisc", "del", "dev", self.host_device, "root")
        _ip(*self.exec_prefix(), "tc", "qdisc", "del", "dev", self.namespace_device, "root")


def _free_subnet() -> int:
    """The third octet of a 10.213.n.0/30 that no interface of the host uses, tried from the pid on."""
    addresses = subprocess.run(["ip", "-4", "-o", "addr"], check=True, capture_output=True, text=True).stdout
    for offset in range(256):
        octet = (os.getpid() + offset) % 256
        if f" 10.213.{octet}." not in addresses:
            return octet
    raise NetworkUnavailable("every 10.213.n.0/30 is in use")


@contextmanager
def namespace_link() -> Iterator[Link]:
    """A namespace with a veth pair to the host, named after this process; removed on exit, whatever
    happened. Raises NetworkUnavailable when it cannot be built."""
    pid = os.getpid()
    with ExitStack() as cleanup:
        try:
            octet = _free_subnet()
            link = Link(
                namespace=f"budgetsvc-part-{pid}",
                host_device=f"bsp{pid}h",
                namespace_device=f"bsp{pid}n",
                host_address=f"10.213.{octet}.1",
            )
            _ip("ip", "netns", "add", link.namespace)
            cleanup.callback(subprocess.run, ["ip", "netns", "del", link.namespace], capture_output=True)
            _ip("ip", "link", "add", link.host_device, "type", "veth", "peer", "name", link.namespace_device,
                "netns", link.namespace)  # fmt: skip
            # Deleting one end deletes both, at once; the namespace's deletion would take its end only later.
            cleanup.callback(subprocess.run, ["ip", "link", "del", link.host_device], capture_output=True)
            _ip("ip", "addr", "add", f"{link.host_address}/30", "dev", link.host_device)
            _ip("ip", "link", "set", link.host_device, "up")
            _ip(*link.exec_prefix(), "ip", "addr", "add", f"10.213.{octet}.2/30", "dev", link.namespace_device)
            _ip(*link.exec_prefix(), "ip", "link", "set", link.namespace_device, "up")
            # Found out now, before the test starts processes, rather than at the cut.
            link.cut()
            link.restore()
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else ""
            raise NetworkUnavailable(f"{exc} {detail}".strip()) from exc
        yield link


class Relay:
    """Forwards each TCP connection accepted on `listen_host` (an ephemeral port, `self.port`) to
    `target`, byte for byte, an orderly close as an orderly close.

    It behaves like the network, not like a proxy that notices things: while the link is cut it
    closes and resets nothing. One exception stands in for PostgreSQL's own TCP keepalive: behind a
    relay PostgreSQL's socket leads to the relay, not to the worker's machine, so PostgreSQL would
    never find that machine gone. The relay therefore keeps alive its sockets to the namespace, and
    when one fails (the keepalive gave up) it closes the connection to `target`, as PostgreSQL ends
    a session whose client its keepalive found dead, which frees that session's advisory locks.
    (Redis's own tcp-keepalive does the same for its clients, after minutes.)
    """

    def __init__(self, *, listen_host: str, target: tuple[str, int]):
        self._target = target
        self._listener = socket.create_server((listen_host, 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        """Stop accepting and end every connection; the processes behind it should be gone by now."""
        with self._lock:
            live = [self._listener, *self._sockets]
        for sock in live:
            _shutdown(sock)
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return  # closed
            downstream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            downstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_SECONDS)
            downstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECONDS)
            downstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._sockets.update((downstream, upstream))
            thread = threading.Thread(target=self._forward, args=(downstream, upstream), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _forward(self, downstream: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=_pump, args=(upstream, downstream), daemon=True)
        back.start()
        _pump(downstream, upstream)
        back.join()
        with self._lock:
            self._sockets.difference_update((downstream, upstream))
        downstream.close()
        upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        # A dead peer (the keepalive gave up, or a reset): end both sides.
        _shutdown(source)
        _shutdown(sink)
    else:
        _shutdown(sink, socket.SHUT_WR)


def _shutdown(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already gone
