"""Graph algorithms on the local subgraph of one person (never the whole graph).

networkx is used only here, on a :class:`~identity.model.Cluster` that the store loaded for one
person, which the per-type limits keep small (at most the sum of ``max_per_person``).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

import networkx as nx

from identity.model import Cluster, ExplainHop, Link


def _graph(cluster: Cluster) -> nx.Graph[str]:
    graph: nx.Graph[str] = nx.Graph()
    graph.add_nodes_from(node.node_id for node in cluster.nodes)
    graph.add_edges_from((link.a, link.b) for link in cluster.links)
    return graph


def components(cluster: Cluster) -> list[set[str]]:
    """Connected components of the cluster, largest first (ties: smallest node id first)."""
    parts = [set(part) for part in nx.connected_components(_graph(cluster))]
    return sorted(parts, key=lambda part: (-len(part), min(part)))


def path(cluster: Cluster, a: str, b: str) -> tuple[ExplainHop, ...] | None:
    """The shortest chain of links from node ``a`` to node ``b``, or ``None`` if there is none."""
    graph = _graph(cluster)
    try:
        nodes = nx.shortest_path(graph, a, b)
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        return None
    by_pair: dict[tuple[str, str], list[Link]] = defaultdict(list)
    for link in cluster.links:
        by_pair[(link.a, link.b)].append(link)
    types = {node.node_id: node.hashed.type for node in cluster.nodes}
    hops = []
    for left, right in pairwise(nodes):
        links = by_pair[(min(left, right), max(left, right))]
        hops.append(
            ExplainHop(
                from_node=left,
                from_type=types[left],
                to_node=right,
                to_type=types[right],
                sources=tuple(sorted({link.source for link in links})),
                first_linked_at=min(link.first_at for link in links),
                last_linked_at=max(link.last_at for link in links),
            )
        )
    return tuple(hops)
