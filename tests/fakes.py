"""The stand-ins the tests use: the package's own (tcsync/standins.py, which the demo uses too), re-exported under the
names the tests have always imported, and run_service, which only tests need."""

import json
import os

from tcsync.standins import FakeNightscout, FakeTandem, point_tconnectsync_at

__all__ = ["FakeNightscout", "FakeTandem", "point_tconnectsync_at", "run_service"]


def run_service(urls_json: str, argv: list) -> int:
    """Entry point for tests that run the service as a process against a FakeTandem."""
    os.environ.setdefault("CACHE_CREDENTIALS", "false")  # importing tconnectsync first reads it
    point_tconnectsync_at(json.loads(urls_json))
    import tcsync_wsgi

    return tcsync_wsgi.main(argv)
