"""Process-wide settings a long-running idgraph server applies once it is built.

Why: CPython's cyclic garbage collector runs a young-generation pass every 700 net container
allocations and, every so often, a full pass over every tracked object in the process. A built
server holds ~100,000 long-lived tracked objects (FastAPI, pydantic, the policies, the
presidio/spaCy scanner once loaded) plus its bounded caches, and a read that builds a page of
thousands of members triggers hundreds of young passes and a few full ones: 0.25-0.55 s CPU of a
1M-person cold audience read was the collector (bench/audience.py profile, stop 32), more than
the policy decisions themselves. Nearly everything the request paths allocate is freed by
reference counting; the collector is only needed for reference cycles, which are rare here.
"""

from __future__ import annotations

import gc
from typing import Final

# Young-generation threshold (CPython's default is 700): a pass every 20,000 net allocations of
# tracked objects. Garbage cycles wait a little longer to be freed (bounded: a pass still comes
# after 20,000 allocations); a page of 1,000 members no longer triggers passes by the dozen.
YOUNG_THRESHOLD: Final = 20_000


def settle_long_lived() -> None:
    """Collect once, move every object alive now out of the collector's reach, raise the
    young-generation threshold.

    Called once a server's objects are built (``api.app.serve_app``). Frozen objects are still
    freed when their last reference goes; only a reference cycle among them would never be
    collected, and objects built at start-up live as long as the process anyway. The older
    generations' thresholds are kept.
    """
    gc.collect()  # what is garbage now is collected, not frozen
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
