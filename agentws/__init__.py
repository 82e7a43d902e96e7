"""agentws/1 as data: the facts every part of the harness shares.

`protocol` names the frames, close codes, error codes and defaults of the wire
protocol (docs/PROTOCOL.md); `events` names the client protocol events and the
columns of the run directory's ``events.csv``. Nothing here does I/O.
"""
