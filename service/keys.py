"""Every typed key under which the application keeps its state."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiosqlite
from aiohttp import web

from service.config import Config

if TYPE_CHECKING:
    from service.consumer import Consumer
    from service.db import Results
    from service.metrics import Metrics
    from service.pingpong.pipeline import Pipeline
    from service.pool import KernelPool

CONFIG = web.AppKey("config", Config)
DB = web.AppKey("db", aiosqlite.Connection)  # the one that writes
DB_READ = web.AppKey("db_read", aiosqlite.Connection)  # lists, counts, small rows
DB_RESULTS: web.AppKey[Results] = web.AppKey("db_results")  # large results
POOL: web.AppKey[KernelPool] = web.AppKey("pool")
CONSUMER: web.AppKey[Consumer] = web.AppKey("consumer")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
CONSUMER_TASK: web.AppKey[asyncio.Task[None]] = web.AppKey("consumer_task")
PINGPONG: web.AppKey[Pipeline] = web.AppKey("pingpong")
