"""The privacy-operations console: server-rendered pages for operators, under ``/console``.

An entrypoint like ``api/`` and ``cli/``: it turns browser requests into calls of the same
services the API uses (DSR, reads, the policy engine, quarantine review, the audit log) and the
results into HTML. It never imports another entrypoint; the app wiring builds
:class:`ConsoleServices` from the one bootstrap and mounts :func:`create_console`.
"""

from console.app import create_console
from console.wiring import ConsoleConfig, ConsoleServices

__all__ = ["ConsoleConfig", "ConsoleServices", "create_console"]
