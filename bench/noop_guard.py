"""The guard's ceiling: mitmproxy in reverse mode, built exactly like ``smsgw guard``
(``guard.server.build_master``: same addons, same options) but with an addon
that admits everything."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.config import Settings  # noqa: E402
from guard.server import build_master  # noqa: E402


class Nothing:
    def requestheaders(self, flow):
        pass


async def main() -> None:
    await build_master(Settings.from_env(), Nothing()).run()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
