"""SyncFlow: keep PostgreSQL in sync with APISmith REST APIs, one cron pass at a time."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("syncflow")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
