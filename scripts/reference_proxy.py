"""What the reference proxies of bench_proxy.py (bare_proxy, tcp_proxy) share."""
from __future__ import annotations

import asyncio
import json
import signal


async def announce_until_signal(host: str, port: int) -> None:
    """Print the ready line ({"proxy": "HOST:PORT"}) and wait for SIGTERM or SIGINT."""
    print(json.dumps({"proxy": f"{host}:{port}"}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
