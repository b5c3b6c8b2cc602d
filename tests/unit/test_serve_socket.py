"""`e2e serve --workers N` keeps TCP_NODELAY: the listener names TCP, so asyncio sets it on every connection."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from orchestrator.cli.admin import _keep_tcp_nodelay
from orchestrator.worker.stack import free_port


def test_the_listener_uvicorn_binds_for_workers_gives_nodelay_connections(monkeypatch):
    monkeypatch.setattr(uvicorn.config.Config, "bind_socket", uvicorn.config.Config.bind_socket)  # undone after
    _keep_tcp_nodelay(uvicorn)
    listener = uvicorn.config.Config(app=None, host="127.0.0.1", port=free_port(), workers=2).bind_socket()
    assert listener.proto == socket.IPPROTO_TCP

    async def accepted_nodelay() -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) == 1
