"""A pytest plugin: where ``PRUNE_SEARCH_NO_SKIPS`` is set (CI), any skipped test fails the run."""

import pytest
from services import strict


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Turn a green run with skips into a failed one in strict mode: the whole suite must run there."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if strict() and reporter is not None and reporter.stats.get("skipped"):
        reporter.write_line(f"strict run: {len(reporter.stats['skipped'])} test(s) skipped, failing", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
