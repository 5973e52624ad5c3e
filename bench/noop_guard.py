"""The guard's ceiling: mitmproxy in reverse mode, built exactly like ``smsgw guard``
(same addons, same options) but with an addon that admits everything."""

from __future__ import annotations

import asyncio
import sys

from mitmproxy import options
from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master

from api.config import Settings
from guard.server import proxy_options


class Nothing:
    def requestheaders(self, flow):
        pass


async def main() -> None:
    settings = Settings.from_env()
    master = Master(options.Options(confdir=settings.guard_confdir))
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                      disable_h2c.DisableH2C(), errorcheck.ErrorCheck(), Nothing())
    master.options.update(**proxy_options(settings))
    await master.run()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
