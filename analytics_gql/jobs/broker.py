"""The Dramatiq broker: Redis when ANALYTICS_REDIS_URL is set (bounded timeouts), else in-process (StubBroker)."""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit
from redis.backoff import NoBackoff
from redis.retry import Retry

from analytics_gql.jobs.actors import Actors, declare
from analytics_gql.settings import Settings

NAMESPACE = "analytics-gql"


def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client that gives up within ~settings.redis_timeout on a dead or frozen server (R3).

    redis-py's defaults would wait on a frozen server without a socket timeout and retry with backoff;
    one bounded attempt is enough here, since every caller is a tick that the next tick supersedes.
    """
    assert settings.redis_dsn
    return redis.Redis.from_url(
        settings.redis_dsn, socket_timeout=settings.redis_timeout, socket_connect_timeout=settings.redis_timeout,
        retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=30,
    )


def make_broker(settings: Settings) -> tuple[dramatiq.Broker, Actors]:
    """A broker with the rollup actors declared on it (Prometheus middleware left out: the API has /metrics)."""
    middleware = [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(), Retries()]
    broker: dramatiq.Broker
    if settings.redis_url:
        broker = RedisBroker(client=redis_client(settings), middleware=middleware, namespace=NAMESPACE)
    else:
        broker = StubBroker(middleware=middleware)
        broker.emit_after("process_boot")
    return broker, declare(broker, settings)
