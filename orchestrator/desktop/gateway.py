"""The per-job web gateway on the head node: serves noVNC and proxies its WebSocket to Xvnc, admitting only
clients inside the job's CIDR rules that present the session token.

Self-contained on purpose: the engine copies this file to the head node and runs it with the node's own
python3 and websockify (Debian python3-websockify), so it imports nothing from the engine.
Usage: python3 gateway.py CONFIG.json VNC_PORT
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from http.server import HTTPServer
from socketserver import TCPServer, ThreadingMixIn
from urllib.parse import parse_qs, urlparse

_TOKEN_IN_TEXT = re.compile(r"(token(=|%3D))[^&'\s\"]+", re.I)


def client_ip(text: str):
    addr = ipaddress.ip_address(text.split("%", 1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:  # a dual-stack socket reports IPv4 clients so
        return addr.ipv4_mapped
    return addr


def viewers(vnc_port: int) -> int:
    """Established TCP connections to Xvnc's port (web viewers through us, native ones through tunnels)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == vnc_port:
                count += 1
    return count


def watch_viewers(vnc_port: int, activity_file: str, every: float) -> None:
    """Record when someone last used the desktop: the engine's idle shutdown counts that as activity."""
    while True:
        if viewers(vnc_port):
            write_atomic(activity_file, f"{time.time():.3f}\n")
        time.sleep(every)


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def build(config: dict, vnc_port: int):
    """The server object, bound and listening (port 0 lets the kernel pick a free one)."""
    from websockify.websocketproxy import ProxyRequestHandler

    networks = [ipaddress.ip_network(c, strict=False) for c in config["allowed"]]
    token = config["token"].encode()
    refused_file = config["refused_file"]

    def refuse(address: str, reason: str) -> None:
        line = json.dumps({"ts": time.time(), "address": address, "reason": reason})
        with open(refused_file, "a") as fh:
            fh.write(line + "\n")
        logging.warning("refused %s: %s", address, reason)

    class Handler(ProxyRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - websockify's signature
            logging.info("%s %s", self.client_address[0], _TOKEN_IN_TEXT.sub(r"\1***", format % args))

        def handle_upgrade(self):
            given = parse_qs(urlparse(self.path).query).get("token", [""])[0].encode()
            if not hmac.compare_digest(given, token):
                refuse(self.client_address[0], "wrong or missing session token")
                self.send_error(403, "wrong or missing session token")
                return
            write_atomic(config["activity_file"], f"{time.time():.3f}\n")
            super().handle_upgrade()

        def do_GET(self):
            if urlparse(self.path).path == "/" and not self.headers.get("upgrade"):
                self.send_response(302)
                self.send_header("Location", "/vnc.html")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

    class Gateway(ThreadingMixIn, HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = socket.AF_INET6 if ":" in config["listen"] else socket.AF_INET

        # what websockify's request handler reads from its server
        target_host, target_port = "127.0.0.1", vnc_port
        wrap_cmd = unix_target = ssl_target = token_plugin = auth_plugin = None
        heartbeat, only_upgrade, verbose, record, run_once, handler_id = 30, False, False, "", False, 0
        daemon, file_only, web_auth, host_token, traffic = False, True, False, False, False
        logger = logging.getLogger("gateway")

        def server_bind(self):
            if self.address_family == socket.AF_INET6:  # one socket for IPv6 and IPv4 clients
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            TCPServer.server_bind(self)  # not HTTPServer's: its getfqdn() may wait on DNS
            self.server_name, self.server_port = self.server_address[0], self.server_address[1]

        def verify_request(self, request, client_address):
            try:
                ok = any(client_ip(client_address[0]) in net for net in networks
                         if net.version == client_ip(client_address[0]).version)
            except ValueError:
                ok = False
            if not ok:
                refuse(client_address[0], "outside the allowed networks")
            return ok

    try:
        return Gateway((config["listen"], 0), Handler)
    except OSError:
        if config["listen"] != "::":
            raise
        Gateway.address_family = socket.AF_INET  # a head node with IPv6 switched off: every IPv4 address
        return Gateway(("0.0.0.0", 0), Handler)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with open(argv[1]) as fh:
        config = json.load(fh)
    try:
        server = build(config, int(argv[2]))
    except ImportError:
        write_atomic(config["failed_file"], "missing: websockify is not installed on the head node "
                                            "(Debian: apt-get install websockify novnc)\n")
        return 3
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # even if started with SIGTERM ignored
    os.chdir(config["web"])  # noVNC's files; SimpleHTTPRequestHandler serves the working directory
    threading.Thread(target=watch_viewers, args=(int(argv[2]), config["activity_file"], config["activity_every"]),
                     daemon=True).start()
    write_atomic(config["port_file"], f"{server.server_address[1]}\n")
    logging.info("gateway on %s port %s -> VNC port %s", config["listen"], server.server_address[1], argv[2])
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
