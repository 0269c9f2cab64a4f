"""The console's pages, one module per area."""

from . import audiences, audit, auth, dashboard, dsr, people, quarantine

ROUTERS = (
    auth.router,
    dashboard.router,
    dsr.router,
    people.router,
    quarantine.router,
    audiences.router,
    audit.router,
)
