"""The web UI's start form: what Locust's own form handling needs added for the harness's options.

* Secrets (``is_secret`` options) are blanked in the page's data: Locust renders their values in clear
  into the HTML, and a password input only hides them on screen. The form then posts them back blank,
  so :func:`secret_values` remembers the real values for the run to put back at test start.
* A multiple-choice option picked in the form (``--stub-fault``) reaches the options as posted.
"""

from __future__ import annotations

from flask import request

from . import options


def _secret_actions() -> list:
    parser = options._PARSER
    return [a for a in (parser._actions if parser else []) if getattr(a, "is_secret", False)]


def secret_values(opts) -> dict:
    """The ``is_secret`` options that have a value, by dest: what the masked form will post back blank."""
    return {a.dest: v for a in _secret_actions() if (v := getattr(opts, a.dest, None))}


def mask_secrets(web_ui) -> None:
    """Blank the ``is_secret`` options' defaults in the page's data, every time Locust rebuilds it."""
    update = web_ui.update_template_args

    def update_masked() -> None:
        update()
        for spec in web_ui.template_args.get("extra_options", {}).values():
            if spec.get("is_secret"):
                spec["default_value"] = ""

    web_ui.update_template_args = update_masked


def keep_multiple_choices(web_ui, opts) -> None:
    """Give each multiple-choice option of ``opts`` the values posted to ``/swarm`` before Locust reads them.

    Locust 2.47's ``/swarm`` casts a posted multiple-choice option to the type of its current value, which
    for an option left at its empty default list is int: a 500 for a fault picked in the form.
    """

    swarm = (getattr(opts, "web_base_path", None) or "").rstrip("/") + "/swarm"

    @web_ui.app.before_request
    def keep_posted() -> None:
        if request.method == "POST" and request.path == swarm:
            for dest in options.multiple_choice_options():
                if posted := [v for v in request.form.getlist(dest) if v]:
                    setattr(opts, dest, posted)
