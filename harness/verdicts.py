"""The quit hook: ``--verdicts`` runs the analysis on the closed run directory.

The seam is a process boundary: ``python -m <--analyser> RUN_DIR`` (default
module ``analysis``), run from the current directory with the harness's
repository on ``PYTHONPATH``. The analysis reads only the run directory (it
never imports ``users`` or ``harness``), writes ``verdicts.json`` and
``report.html`` there, and its exit code becomes Locust's: 0 every verdict
passed, 1 a verdict failed, 3 inconclusive (anything else: the analysis itself
failed). A missing module or a timeout gives exit code 2. ``--thresholds`` and
``--gate`` are passed on to it.

The web UI's Resilience tab (:mod:`harness.webui`) runs the same analysis on the
still-open run directory each time a test stops there.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 600.0
FAILED_TO_RUN = 2


def analyser_args(options) -> list[str]:
    """The harness options the analyser takes too (``--thresholds``, ``--gate``), as its arguments."""
    return [f"--{name}={value}" for name in ("thresholds", "gate") if (value := getattr(options, name, None))]


def run_analysis(run_dir: Path, module: str = "analysis", args: Sequence[str] = (), timeout: float = TIMEOUT_S) -> int:
    """Run the analyser on ``run_dir`` with extra ``args``, print its verdict table as it prints it (the run's
    last word, not log lines); return its exit code (2 if it could not run)."""
    return analyse(run_dir, module, args, timeout, echo=True)[0]


def analyse(
    run_dir: Path, module: str = "analysis", args: Sequence[str] = (), timeout: float = TIMEOUT_S, echo: bool = False
) -> tuple[int, str]:
    """Run the analyser on ``run_dir`` with extra ``args``: its exit code (2 if it could not run), its output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", module, str(run_dir), *args]
    logger.info("running the analysis: %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        logger.error("the analysis (%s) did not finish within %.0f s", module, timeout)
        return FAILED_TO_RUN, f"the analysis did not finish within {timeout:.0f} s"
    except OSError as e:
        logger.error("could not run the analysis (%s): %s", module, e)
        return FAILED_TO_RUN, f"could not run the analysis: {e}"
    output = done.stdout + done.stderr
    if echo:
        sys.stdout.write(done.stdout)
        sys.stdout.flush()
    for line in done.stderr.splitlines()[-40:]:
        logger.warning("analysis: %s", line)
    if done.returncode == 1 and "No module named" in done.stderr:
        logger.error("analysis module %r not found", module)
        return FAILED_TO_RUN, output
    return done.returncode, output
