"""Stream entrypoint: ``idgraph consume`` (Kafka ingest in, outbound events out).

A thin shell like ``api/`` and ``cli/``: it translates Kafka records into calls of the ingest use
case and relays the graph's event outbox to topics. It never imports another entrypoint.
"""
