"""The HTTP and command-line shell around the idgraph core."""
