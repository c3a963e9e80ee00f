"""The project's version, in one place: the package metadata (pyproject.toml reads it
from here) and every program's ``--version``."""

__version__ = "0.3.0"
