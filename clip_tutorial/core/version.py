"""The package's version, read by ``pyproject.toml`` and printed by :func:`setup_notebook`."""
__version__ = "0.1.0"
