"""contract: the event contract between a run and its analysis, free of any protocol.

What a simulated client observes (``events.csv``), what telemetry samples
(``samples.csv``), the user roles and the classified close reasons: defined once
here and imported by ``users/``, ``harness/`` and ``analysis/``. The analysis
judges these names only, never a protocol's frames or close codes.
"""
