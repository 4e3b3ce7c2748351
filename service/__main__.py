"""Command line: `python -m service [--port N ...]`, each option mirroring a setting."""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields, replace

from aiohttp import web

from service.app import create_app
from service.config import Config, field_type

HELP = {
    "database_url": "sqlite:///relative/path or sqlite:////absolute/path",
    "schema_path": "the schema file applied at start-up",
    "host": "address to listen on",
    "port": "port to listen on",
    "workers": "kernel processes",
    "kernel_delay": "seconds each kernel run sleeps, standing for a long calculation",
    "max_points": "most rows a result may have",
    "poll_interval": "seconds between looks at the queue when nothing wakes the consumer",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "pingpong_a_url": "base URL of ping-pong service A (empty: this server)",
    "pingpong_b_url": "base URL of ping-pong service B (empty: this server)",
    "pingpong_reject_rate": "probability that a ping-pong service refuses a valid payload",
    "pingpong_seed": "seed of the ping-pong random source (empty: unpredictable)",
    "pingpong_max_hops": "hops after which a ping-pong pipeline is stopped",
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
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    web.run_app(create_app(config), host=config.host, port=config.port, print=None)


if __name__ == "__main__":
    main()
