"""The load shape of every scenario: its user classes by weight, ramped to its users, held for its run time.

Locust finds :class:`ScenarioShape` when a scenario's config file names this
module after the root locustfile (``locustfile = locustfile.py,scenarios/shape.py``).
``-u``, ``-r`` and ``-t`` on the command line override the scenario's numbers
(``use_common_options``), which is how the tests run every scenario briefly.
"""

from __future__ import annotations

from locust import LoadTestShape

from scenarios import catalog


class ScenarioShape(LoadTestShape):
    """Spawn the scenario's mix to ``--users`` at ``--spawn-rate``, stop at ``--run-time``."""

    use_common_options = True

    def tick(self):
        opts = self.runner.environment.parsed_options
        scenario = catalog.get(opts.scenario) if opts.scenario else None
        limit = opts.run_time or (scenario.seconds if scenario else None)
        if limit is not None and self.get_run_time() >= limit:
            return None
        users = opts.num_users or (scenario.users if scenario else 1)
        rate = opts.spawn_rate or (scenario.spawn_rate if scenario else 1)
        return users, rate, self.user_classes(scenario)

    def user_classes(self, scenario: catalog.Scenario | None) -> list | None:
        """The scenario's classes, weighted by its mix (None: every class of the locustfile, Locust's default)."""
        if scenario is None:
            return None
        available = self.runner.environment.available_user_classes or {}
        classes = []
        for name, weight in scenario.mix.items():
            cls = available[name]
            cls.weight = weight  # Locust's dispatcher splits users by class weight
            classes.append(cls)
        return classes
