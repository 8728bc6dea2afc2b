"""The command line: a thin Typer layer over the Python API in :mod:`projctl`.

``_lazy`` owns the app, the exit codes and the error-to-exit mapping; each
command module registers its commands into it with :func:`~projctl.cli._lazy.command`
and is imported only when one of its commands runs.
"""

from projctl.cli._lazy import ExitCode, app, main

__all__ = ["ExitCode", "app", "main"]
