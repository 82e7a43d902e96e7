"""The notebooks under analysis/notebooks/: stored without outputs, and they run headless on a run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from .synthetic_run import write_run

NOTEBOOKS = Path(__file__).resolve().parent.parent / "analysis" / "notebooks"
NAMES = ("capacity_review.ipynb", "leak_investigation.ipynb")
KERNEL = "agentws-test"


def cells(name: str, kind: str = "code") -> list:
    return [c for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells if c.cell_type == kind]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in cells(name):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


@pytest.mark.parametrize("name", NAMES)
def test_first_code_cell_holds_the_parameters(name):
    first = cells(name)[0]
    assert "parameters" in first.metadata.get("tags", [])
    assert 'RUN_DIR = os.environ.get("AGENTWS_RUN_DIR", "runs/latest")' in first.source
    assert len(cells(name, "markdown")) >= 4  # each step says what it shows


#: Runs in a child process: the test process may have been monkey-patched by gevent (Locust, imported by
#: other test modules), which breaks the asyncio and threads a kernel client needs.
EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
source, executed, kernel, cwd = sys.argv[1:]
nb = nbformat.read(source, as_version=4)
NotebookClient(nb, kernel_name=kernel, timeout=120, allow_errors=False, resources={"metadata": {"path": cwd}}).execute()
nbformat.write(nb, executed)
"""


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory):
    """A kernel spec running this very interpreter (the venv's), whatever else is installed."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return root


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return write_run(root / "this", seconds=240, leak_mib_per_hour=600.0), write_run(root / "base", seconds=240)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_headless_on_a_run_directory(name, jupyter_path, run_dirs, tmp_path):
    this, base = run_dirs
    env = os.environ | {
        "AGENTWS_RUN_DIR": str(this),
        "AGENTWS_BASELINE_DIR": str(base),
        "JUPYTER_PATH": str(jupyter_path),
        "IPYTHONDIR": str(tmp_path / "ipython"),  # nothing written into the home directory
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "MPLBACKEND": "Agg",
    }
    executed = tmp_path / name
    argv = [sys.executable, "-c", EXECUTE, str(NOTEBOOKS / name), str(executed), KERNEL, str(NOTEBOOKS)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-5000:]  # a CellExecutionError names the cell and its traceback
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert html.count("data:image/png;base64,") >= 2  # the charts showed
    assert "no data" not in html
    text = "".join(o.get("text", "") for o in outputs)
    if name == "capacity_review.ipynb":
        assert "no baseline" not in text
        assert "KiB per connection" in html
    else:
        assert "KiB per connection" in text
