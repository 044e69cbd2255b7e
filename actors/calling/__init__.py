"""Calling a Director: the one path every caller takes (clients, the coordinator, MCP).

Below the coordinator and the clients, above the Director whose actions it
names: ``calls.py`` the call and its rules for a Director's death;
``watches.py`` what else ends a pending call (a restarted Director, an
exchange that lost its state). Light: it loads no Parsl.
"""
