"""The pytest plugin: fixtures, the ``isolated`` marker and ``--appdomain-isolate``.

``appdomain.pytest_plugin`` is the entry point that names the hooks of ``_plugin``.  In the main
process: ``_plugin`` (hooks, fixtures, options), ``_isolation`` (domains prepared ahead, outcomes
rebuilt), ``_code`` (code compiled once, shared), ``_leaks``.  Inside a test's domain:
``_remote`` (import the test module, run the test), ``_unittest``, ``_standin`` (a light
``pytest``), ``_ar`` (pytest's assertion helpers, loaded on first failure).
"""
