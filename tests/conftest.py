"""Shared test set-up.

Real clips come from `stae_jax.data.real_data_dir()` ($STAE_REAL_DATA, default ../shared/data/real).
Where they are absent the tests that need them skip with a reason; with STAE_NO_SKIP=1 (as .ci/run
sets it) every skip becomes a failure, so CI can never pass by skipping.
"""

import os

from absl import flags
import pytest

from stae_jax.data import real_data_dir

# grain's multi-worker loaders read absl flags; tests don't go through app.run.
flags.FLAGS.mark_as_parsed()

NO_SKIP = os.environ.get("STAE_NO_SKIP") == "1"


@pytest.fixture(scope="session")
def real_data():
  path = real_data_dir()
  if not (path / "hmdb51").is_dir():
    pytest.skip(f"real clips not found at {path}; set STAE_REAL_DATA to the shared/data/real folder")
  return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  outcome = yield
  report = outcome.get_result()
  if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
    report.outcome = "failed"
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.longrepr = f"skipped under STAE_NO_SKIP=1 (CI forbids skips): {reason}"
