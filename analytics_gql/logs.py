"""Logging for the long-running commands (serve, scheduler, worker): one format, routine noise kept out."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure() -> None:
    """INFO to stderr in one format. APScheduler logs every run of every job at INFO ("Running job ...", "executed
    successfully"): two lines each rollup interval, so its executors log warnings (missed runs, errors) only."""
    logging.basicConfig(level=logging.INFO, format=FORMAT)
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
