"""The command-line entrypoint (``idgraph``): typer commands and bulk files.

Each command parses its arguments, calls one use case (:mod:`services`, the privacy services)
built by :mod:`bootstrap`, and prints the result. It never imports another entrypoint (``api/``).
"""
