"""Project-wide fixtures: one throwaway PostgreSQL cluster per test session, a database per test.

The cluster starts on first use only (tests that never touch PostgreSQL never pay for it).
When PostgreSQL truly cannot start, the tests that need it are skipped with the reason;
under CI (`CI` set to anything but "false"/"0") that is a failure instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pg_cluster import Cluster, ClusterUnavailable, running_cluster


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        with running_cluster() as cluster:
            yield cluster
    except ClusterUnavailable as exc:
        message = f"PostgreSQL could not start, PostgreSQL thread-store tests NOT RUN: {exc}"
        if _in_ci():
            pytest.fail(message)
        sys.stderr.write(f"\n*** {message}\n")
        pytest.skip(message)


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)
