"""Admission of event batches: at most VITRINE_EVENTS_MAX_PER_SECOND events per second for
the whole deployment, counted in Redis (the shared cache), so an overload is answered 429
with Retry-After before anything is written, rather than by queueing requests until they
time out or by dropping events silently. The figure is what `bench/events.py` measured the
database to store on the machine, with headroom; raise it with the hardware.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# One atomic step on the server's clock: add this batch to the current second's count
# unless it would pass the limit. Returns -1 when admitted, else ms to the next second.
ADMIT_SCRIPT = """
local clock = redis.call('TIME')
local key = KEYS[1] .. ':' .. clock[1]
local count = tonumber(redis.call('GET', key) or '0')
if count + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return math.ceil((1000000 - tonumber(clock[2])) / 1000)
end
redis.call('INCRBY', key, ARGV[1])
redis.call('EXPIRE', key, 2)
return -1
"""
_KEY = "vitrine:events:admitted"
_RETRY_SECONDS = 5.0
_redis_down_until = 0.0


def events_admit(*, count: int) -> float | None:
    """None when `count` more events fit this second; else seconds to wait before retrying.

    Redis down: admitted (with a warning) rather than refused, as the API throttle does;
    the database is then the only limit, and a slow insert is still acknowledged only once
    committed, so no event is lost either way.
    """
    global _redis_down_until
    limit = settings.VITRINE_EVENTS_MAX_PER_SECOND
    if count > limit:
        return None  # a batch bigger than a second's budget still goes through, alone
    backend = caches["default"]
    if not isinstance(backend, RedisCache) or time.monotonic() < _redis_down_until:
        return None
    try:
        key = backend.make_and_validate_key(_KEY)
        client = backend._cache.get_client(key, write=True)
        wait_ms = int(client.eval(ADMIT_SCRIPT, 1, key, count, limit))
    except RedisError as error:
        _redis_down_until = time.monotonic() + _RETRY_SECONDS
        logger.warning("Event admission counts unavailable (%s); admitting events.", error)
        return None
    return None if wait_ms < 0 else max(wait_ms, 1) / 1000
