"""The composition root: settings in, ready collaborators out (cosmic python's ``bootstrap``).

Every entrypoint (``api/``, ``cli/``, a stream consumer, the console) builds its collaborators
here and nowhere else: :func:`bootstrap.container.build_container` chooses the adapters, loads
the policies and keys, and wires the use cases.
"""
