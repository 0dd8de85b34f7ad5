"""One client's fair share of the connection limit (issue 27, N6), over real sockets with the service as its Procfile
starts it: a tenth of the limit (at most 200) per client, its address, or behind a trusted proxy the client the proxy
names as X-Forwarded-For's last entry. The other client binds 127.0.0.2: Linux routes all of 127.0.0.0/8 to lo.

WAITRESS_CONNECTION_LIMIT=100 here: a share of 10.
"""

import socket

from conftest import request, wait_for
from test_faults import serving

LIMIT = {"WAITRESS_CONNECTION_LIMIT": "100"}
SHARE = 10


def held_open(address, source: str = "127.0.0.1") -> socket.socket:
    """A connection that has sent half a request's headers (the service waits for the rest)."""
    sock = socket.create_connection(address, timeout=5, source_address=(source, 0))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    return sock


def reset_at_once(sock: socket.socket) -> bool:
    """Whether the service closed sock without an answer (it is reset: a recv sees the reset or the end)."""
    sock.settimeout(2)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def served(address) -> bool:
    """Whether /healthz from 127.0.0.1 answers 200 (False while its connection is reset)."""
    try:
        return request(address, "GET", "/healthz", timeout=1)[0] == 200
    except ConnectionError:
        return False


def test_a_client_past_its_share_has_its_newest_connections_reset_while_another_is_served(tmp_path):
    with serving(tmp_path, **LIMIT) as (address, log):
        held = [held_open(address) for _ in range(SHARE)]
        extra = [held_open(address) for _ in range(3)]
        assert all(reset_at_once(sock) for sock in extra)
        assert request(address, "GET", "/healthz", source="127.0.0.2", timeout=1)[0] == 200
        assert all(sock.fileno() != -1 for sock in held)
        held.pop().close()  # a place in the share is free again: the next connection is served
        assert wait_for(lambda: served(address))
        for sock in held + extra:
            sock.close()
    assert " connection_limit=100 " in log.read_text()


def test_behind_a_trusted_proxy_the_share_is_the_forwarded_clients_and_past_it_a_429(tmp_path):
    """nginx or Caddy at 127.0.0.1: every connection is the proxy's; the client is X-Forwarded-For's last entry."""
    with serving(tmp_path, TRUSTED_PROXY="127.0.0.1", **LIMIT) as (address, _):
        held = []
        for _ in range(SHARE + 5):  # more than a share from the proxy's address: none reset at accept
            sock = held_open(address)
            sock.sendall(b"X-Forwarded-For: 192.0.2.7, 198.51.100.1\r\n\r\n")
            held.append(sock)
        # a share's worth answered (and, kept alive, still counted for 198.51.100.1, the entry the proxy added);
        # the rest got a 429
        statuses = [sock.recv(4096)[:12] for sock in held]
        assert statuses == [b"HTTP/1.1 200"] * SHARE + [b"HTTP/1.1 429"] * 5
        status, headers, body = request(address, "GET", "/healthz", {"X-Forwarded-For": "198.51.100.1"})
        assert (status, headers.get("Retry-After")) == (429, "1"), body
        assert request(address, "GET", "/healthz", {"X-Forwarded-For": "198.51.100.2"})[0] == 200
        for sock in held:
            sock.close()
