"""Log setup: one line per event, ``time level logger: message``."""

from __future__ import annotations

import logging
import sys


def setup(level: str = "info") -> None:
    # The line has no file, line, thread or process: do not compute them for every record
    # (the logging module's documented optimizations; a mass change logs many lines at once).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
