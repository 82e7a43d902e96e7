"""server_stub: the reference agentws/1 backend and the harness's embedded default target.

Run it with ``python -m server_stub --help``. The protocol it speaks is
``docs/PROTOCOL.md``; the planted faults it can run with are in `faults`.
"""
