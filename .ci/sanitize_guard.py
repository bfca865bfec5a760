"""pytest plugin of .ci/check_sanitizers.sh: the session fails if anything imported JAX.

JAX's own native code is not built for AddressSanitizer and floods it with
reports; the sanitizer run is about sat_fast's kernels, so it must stay out.
"""

from __future__ import annotations

import sys

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fails the session when jax was imported by any test."""
    if "jax" in sys.modules:
        print("\nsanitize_guard: a test imported jax; select only tests that do not", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
