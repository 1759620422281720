"""The `vidspool` command line (commands), its model commands (models) and `vidspool doctor`.
`main` is the console script's entry point (pyproject.toml)."""

from daemon.cli.commands import main

__all__ = ["main"]
