"""``python -m stream``: the same as ``idgraph consume``."""

from stream.command import main

main()
