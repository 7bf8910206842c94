"""API routers, one module per group of endpoints, each built by a ``*_router(state)`` factory.

Routes tagged ``openeo`` are listed in the capabilities' ``endpoints`` (built from the app's routes, so
the list is always what the server really answers).
"""
