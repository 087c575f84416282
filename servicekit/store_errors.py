"""What every MongoDB store of the mesh does with driver failures.

A lost connection or a timeout is the store being away for a while: UNAVAILABLE, which callers may
retry (and LiveKit retries a webhook on it). A duplicate key goes to the caller, who may be racing
on purpose; any other driver error is a bug, left to surface as INTERNAL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import structlog
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from servicekit.errors import DomainError, ErrorKind

log = structlog.get_logger("servicekit.store_errors")


def store_unavailable(store: str) -> DomainError:
    """UNAVAILABLE `STORE_UNAVAILABLE`, naming the store ("conversation store", "call store")."""
    return DomainError(ErrorKind.UNAVAILABLE, "STORE_UNAVAILABLE", f"the {store} is unavailable")


@contextlib.contextmanager
def store_errors(store: str) -> Iterator[None]:
    """Driver failures inside the block as domain errors, never UNKNOWN or a raw traceback."""
    try:
        yield
    except DuplicateKeyError:
        raise
    except ConnectionFailure as exc:
        log.warning("store unreachable", store=store, error_type=type(exc).__name__)
        raise store_unavailable(store) from None
    except PyMongoError as exc:
        if exc.timeout:
            log.warning("store timed out", store=store, error_type=type(exc).__name__)
            raise store_unavailable(store) from None
        raise
