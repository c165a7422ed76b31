"""CI must fail when a test is skipped there; elsewhere a missing service only skips, with its reason."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SKIPPING = """
import pytest

def test_needs_a_service():
    pytest.skip("database server unreachable")

def test_runs():
    assert True
"""


@pytest.mark.parametrize(("value", "code"), [("1", pytest.ExitCode.TESTS_FAILED), ("", pytest.ExitCode.OK)])
def test_a_skip_fails_the_run_only_in_strict_mode(pytester, monkeypatch, value, code):
    monkeypatch.setenv("PRUNE_SEARCH_NO_SKIPS", value)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the plugin and its helpers
    pytester.makepyfile(SKIPPING)
    result = pytester.runpytest_subprocess("-p", "strict_skips", "-p", "no:cacheprovider", "-rs")
    assert result.ret == code
    result.assert_outcomes(passed=1, skipped=1)
    assert ("strict run: 1 test(s) skipped, failing" in result.stdout.str()) == bool(value)
    assert "database server unreachable" in result.stdout.str()
