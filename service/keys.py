"""Every typed key under which the application keeps its state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiosqlite
from aiohttp import web

from service.config import Config

if TYPE_CHECKING:
    from service.consumer import Consumer, KernelPool

CONFIG = web.AppKey("config", Config)
DB = web.AppKey("db", aiosqlite.Connection)
POOL: web.AppKey[KernelPool] = web.AppKey("pool")
CONSUMER: web.AppKey[Consumer] = web.AppKey("consumer")
