"""``python -m projctl.server ARGS``: a background server, as ``runtime.ServerLaunch`` starts it.

The process's composition root: the one place in ``server/`` that names a storage (the
TinyDB file the launch names); everything else in the package sees only the
:class:`~projctl.backend.ServedStorage` it is given.
"""

from __future__ import annotations

import logging
import sys

from projctl import config
from projctl.errors import ProjctlError
from projctl.runtime import ServerLaunch
from projctl.server.app import configure_logging, run_server
from projctl.server.config import server_config
from projctl.store import ProjectStore

log = logging.getLogger("projctl.server")


def main(argv: list[str] | None = None) -> int:
    """``python -m projctl.server ARGS``: a background server, as ``runtime`` launches it.

    Its output goes to the server log, where the launching command reads the last
    line when the server could not start.
    """
    configure_logging()
    try:
        launch = ServerLaunch.parse(sys.argv[1:] if argv is None else argv)
        options = launch.options
        # The launching command's environment is this one's: the same settings (the
        # journal limit, for one) hold for the store and the server as for ``serve``.
        settings = config.load_settings(db=str(launch.db_path))
        run_server(
            ProjectStore(launch.db_path, journal_limit=settings.journal_limit),
            server_config(
                settings._replace(max_connections=options.max_connections),
                host=options.host,
                port=options.port,
                port_fallback=options.port_fallback,
                idle_timeout=options.idle_timeout,
                require_token=options.require_token,
            ),
        )
    except ProjctlError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
