"""The ceiling for bench/load.py: a FastAPI hello-world served by the same uvicorn.

Whatever idgraph's endpoints reach is compared with what this app reaches on the same machine
in the same run: the gap is idgraph's own cost (validation, hashing, the store, the policy),
not the HTTP stack's.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, bool]:
    """The cheapest possible JSON response."""
    return {"ok": True}
