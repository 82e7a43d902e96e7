"""Scenarios: the seed test plans as runnable Locust config files and a load shape (see README.md)."""
