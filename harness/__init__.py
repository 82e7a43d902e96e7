"""The run around the users: options, run directory, event recorder, telemetry, embedded backend.

``import harness`` is all a locustfile needs: the plugin wires itself through
Locust's events (see :mod:`harness.plugin`). :func:`harness.embedded.restart`
restarts the embedded backend from a scenario.
"""

__version__ = "0.1.0"

from . import embedded, plugin  # registers the listeners

__all__ = ["__version__", "embedded", "plugin"]
