"""Calling a Director: the one path every caller takes (clients, the coordinator, MCP).

Below the coordinator and the clients, above the Director whose actions it
names: ``calls.py`` the call and its rules for a Director's death, a
restarted Director (``restarts.py``) and an exchange that lost its state
(``mailbox_watch.py``). Light: it loads no Parsl.
"""
