"""aiohttp's server side, without its client side (``healthd.bare``): what ``/metrics``, the
API and the control socket are served with.  Import ``web`` from here, not from aiohttp."""

from healthd import bare

bare.enter("aiohttp", version=True)

from aiohttp import web  # noqa: E402
from aiohttp.http import HttpVersion11  # noqa: E402

__all__ = ["HttpVersion11", "web"]
