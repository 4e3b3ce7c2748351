"""Every typed key under which the application keeps its state."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from service.config import Config

if TYPE_CHECKING:
    from service.clients import StalledAnswers
    from service.consumer import Consumer
    from service.db import Database
    from service.events import RunEvents
    from service.leases import Leases
    from service.metrics import Metrics
    from service.pingpong.pipeline import Pipeline
    from service.pool import KernelPool

CONFIG = web.AppKey("config", Config)
DB: web.AppKey[Database] = web.AppKey("db")  # every read and write, whichever the backend
EVENTS: web.AppKey[RunEvents] = web.AppKey("events")  # runs queued, ended, cancelled
POOL: web.AppKey[KernelPool] = web.AppKey("pool")
CONSUMER: web.AppKey[Consumer] = web.AppKey("consumer")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
CONSUMER_TASK: web.AppKey[asyncio.Task[None]] = web.AppKey("consumer_task")
PINGPONG: web.AppKey[Pipeline] = web.AppKey("pingpong")
LEASES: web.AppKey[Leases] = web.AppKey("leases")  # this process's worker record
STALLS: web.AppKey[StalledAnswers] = web.AppKey("stalls")  # answers whose client stopped reading
