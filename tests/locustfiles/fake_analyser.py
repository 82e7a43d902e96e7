"""A stand-in for ``analysis`` (``python -m tests.locustfiles.fake_analyser RUN_DIR``).

Exits with the code named by the run's id (``--run-id verdict-N`` -> N,
otherwise 0), after checking that the run directory it was given is closed,
and writes a ``verdicts.json`` as the real analysis will.
"""

import json
import sys
from pathlib import Path

run_dir = Path(sys.argv[1])
meta = json.loads((run_dir / "meta.json").read_text())
assert meta["complete"], "the analysis must only see a closed run directory"
run_id = meta.get("run_id") or ""
code = int(run_id.removeprefix("verdict-")) if run_id.startswith("verdict-") else 0
(run_dir / "verdicts.json").write_text(json.dumps([{"name": "fake", "status": "pass" if code == 0 else "fail"}]))
print(f"fake analyser: exit {code}")
sys.exit(code)
