"""The ceiling for bench/load.py: a FastAPI hello-world served by the same uvicorn.

Whatever idgraph's endpoints reach is compared with what this app reaches on the same machine
in the same run: the gap is idgraph's own cost (validation, hashing, the store, the policy),
not the HTTP stack's.

``async def``, as FastAPI's own hello-world: the cheapest JSON response FastAPI serves. Until
this stop it was a plain ``def`` with an inferred response model, which FastAPI runs in its
thread pool twice (the endpoint, then the response check): two hand-overs to a worker thread
and back, 0.26 ms of CPU per request in process against 0.08 ms now. idgraph's identify pays
one such hop (its endpoint waits for a durable commit), so the old ceiling charged hello a cost
idgraph no longer pays, and flattered every ratio to it.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, bool]:
    """The cheapest possible JSON response."""
    return {"ok": True}
