"""chatline: a JSON chat dialect of its own (server.py) and its harness adapter (adapter.py)."""
