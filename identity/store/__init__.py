"""The graph-store port and its adapters (``sqlite`` embedded default, ``neo4j``)."""

from identity.store.port import GraphStore, GraphTransaction

__all__ = ["GraphStore", "GraphTransaction"]
