"""The identity domain: identifiers, keyed hashing, resolution and the graph-store port.

Nothing in this package imports a web framework or a database driver other than through
an adapter module named after its technology.
"""
