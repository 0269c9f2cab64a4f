"""The use-case layer: every entrypoint (HTTP API, CLI, stream consumer, console) calls these.

A use case takes raw input (identifier pairs, request models), validates it in one pass, runs
the domain (``identity/``, ``privacy/``) in one transaction where it writes, audits, and
returns domain results. Collaborators come in through constructors (wired once by
:mod:`bootstrap`); nothing here reads settings or the environment, and nothing imports an
entrypoint or a web framework. See docs/ARCHITECTURE.md.
"""
