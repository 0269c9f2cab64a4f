"""bench/load.py's client: the open loop stays bounded and a dropped connection is a figure."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from bench import load


def test_open_loop_bounds_in_flight_and_resends_a_dropped_connection_once() -> None:
    in_flight = peak = 0
    attempts: Counter[int] = Counter()

    async def server(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.005)
            index = int(request.url.params["i"])
            attempts[index] += 1
            if index % 5 == 0 and attempts[index] == 1:
                raise httpx.ReadError("connection closed", request=request)
            if index == 7:
                raise httpx.ReadError("connection closed", request=request)  # every time
            return httpx.Response(200)
        finally:
            in_flight -= 1

    async def drive() -> load.Phase:
        transport = httpx.MockTransport(server)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            return await load.run_open(
                "identify",
                client,
                lambda c, i: c.get("/", params={"i": i}),
                40,
                rate=10_000.0,  # every request due at once: only the bound holds them back
                cap=600.0,
                max_in_flight=4,
                retry_transport=True,
            )

    phase = asyncio.run(drive())

    assert peak <= 4
    assert phase.max_in_flight == 4
    assert phase.requests == 40
    assert phase.retried == 9  # the 8 multiples of 5 once, and 7 once before it failed again
    assert phase.errors == 1
    assert phase.error_statuses == {"ReadError": 1}
    assert phase.summary()["error_rate"] == 0.025
