"""Command line: `python -m service [--port N ...]`, each option mirroring a setting."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields, replace

from aiohttp import web

from service import logs, memory
from service.app import create_app
from service.config import Config, field_type
from service.db import DatabaseUnavailable
from service.descriptors import raise_open_files_limit

log = logging.getLogger("service")

HELP = {
    "role": "all (API and kernels), api (API and page only) or worker (kernels, /health, /metrics)",
    "database_url": "sqlite:///relative/path, sqlite:////absolute/path or"
    " postgresql://user:password@host:port/database",
    "schema_path": "the SQLite schema file applied at start-up",
    "host": "address to listen on",
    "port": "port to listen on",
    "workers": "kernel processes",
    "kernel_delay": "seconds each kernel run sleeps, standing for a long calculation",
    "max_points": "most rows a result may have",
    "poll_interval": "seconds between looks at the queue when nothing wakes the consumer",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "log_format": "text, or json for one JSON object a line",
    "kernel_timeout": "seconds after which a kernel run is stopped and failed (empty: none)",
    "shutdown_grace": "seconds a running kernel may finish in after SIGTERM or SIGINT",
    "max_attempts": "starts after which a run interrupted by crashes is failed",
    "lease": "seconds without a heartbeat after which a worker's runs are queued again",
    "max_queued": "queued runs beyond which a create answers 429",
    "retention": "seconds an ended run is kept before it is deleted (0: every run is kept)",
    "api_token": "bearer token required by /api/v1, /metrics and /pingpong (empty: open)",
    "client_timeout": "seconds a client may take to send a request head or body, or stall"
    " reading its answer; also how long an idle connection is kept",
    "pingpong_a_url": "base URL of ping-pong service A (empty: this server)",
    "pingpong_b_url": "base URL of ping-pong service B (empty: this server)",
    "pingpong_reject_rate": "probability that a ping-pong service refuses a valid payload",
    "pingpong_seed": "seed of the ping-pong random source (empty: unpredictable)",
    "pingpong_max_hops": "hops after which a ping-pong pipeline is stopped",
    "pingpong_max_in_flight": "ping-pong forwards under way at once; beyond it hops get 429",
}


def parse_args(argv: list[str] | None = None) -> Config:
    """The config from the environment, overridden by the command line."""
    env = Config.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m service", description="Run the calculation service."
    )
    for field in fields(Config):
        default = getattr(env, field.name)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=field_type(field.name),
            default=default,
            help=f"{HELP[field.name]} (env {field.name.upper()}, now: %(default)s)",
        )
    return replace(env, **vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    """Serve until stopped. What stops the start (a bad setting, a database that cannot be
    opened, a port in use) is said in one line on stderr, with a non-zero exit."""
    try:
        config = parse_args(argv)
    except ValueError as exc:
        sys.exit(f"python -m service: {exc}")
    memory.configure()
    logs.configure(config.log_level, config.log_format)
    before, after = raise_open_files_limit()
    if after != before:
        log.info("open files limit raised from %d to %d", before, after)
    # Our middleware logs each request once, with its request id; aiohttp's own log would
    # say it again. The shutdown timeout leaves the consumer's grace time to finish runs.
    # aiohttp's keep-alive timer starts when a connection opens and is not moved by bytes
    # that do not finish a request head, so it bounds the time a head may take, too. After
    # an answer to a request whose body was not all read (a 408), aiohttp reads on for the
    # lingering time before it closes: that is bounded by the same setting.
    try:
        web.run_app(
            create_app(config),
            host=config.host,
            port=config.port,
            print=None,
            access_log=None,
            shutdown_timeout=5,
            keepalive_timeout=config.client_timeout,
            lingering_time=config.client_timeout,
        )
    except (DatabaseUnavailable, OSError, ValueError) as exc:
        sys.exit(f"python -m service: cannot start: {exc}")


if __name__ == "__main__":
    main()
