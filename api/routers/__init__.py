"""HTTP routers: thin translations between HTTP and core calls."""
