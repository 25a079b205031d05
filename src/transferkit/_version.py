"""The installed version of transferkit, read once from the package metadata."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("transferkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
