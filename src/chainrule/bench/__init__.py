"""The benchmark harness behind ``chainrule bench``: timing helpers and suites.

Suites are modules exposing ``suite(quick: bool) -> list[dict]`` (one dict per row of the
table); timing lives in :mod:`chainrule.bench.timing`.
"""
