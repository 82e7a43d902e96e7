"""analysis: run directory -> verdicts -> HTML report. Never imports users/ or harness/."""
