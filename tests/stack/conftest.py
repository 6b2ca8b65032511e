"""The production stack as real local processes, started once for tests/stack/test_stack.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .harness import PG_BIN


def _missing_system_deps() -> list[str]:
    missing = []
    if not (PG_BIN / "pg_ctl").exists():
        missing.append("postgresql-15 (/usr/lib/postgresql/15/bin)")
    if not shutil.which("chromium"):
        missing.append("chromium")
    return missing


@pytest.fixture(scope="module")
def stack(request, sdss_sample_path):
    from .stack import Stack

    missing = _missing_system_deps()
    if missing:
        # CI installs them (scripts/system-deps.sh via `make test`): their absence is a failure, not a skip.
        pytest.fail(f"the stack test needs Debian packages {missing}: run `bash scripts/system-deps.sh` as root")
    root = Path(tempfile.mkdtemp(prefix="stellar-stack-"))
    stack = Stack(root, sdss_sample_path)
    request.node.stellar_stack = stack
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        print(f"\nstack timings (s): {stack.timings}; logs in {stack.logs}")
        if os.environ.get("STELLAR_KEEP_STACK_LOGS") is None and not getattr(request.node, "stack_failed", False):
            shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        stack = getattr(item.parent, "stellar_stack", None)  # set by the module-scoped fixture
        if stack is not None:
            item.parent.stack_failed = True
            report.sections.append(("stack process logs", stack.log_tails()))
