"""Locks that hold across machines: GOVSHARE_COORDINATION names a PostgreSQL database
(``postgresql://user:password@host/db``) whose transaction-scoped advisory locks serialise what
the home's file locks serialise on one machine (the sync lease, appends to the access log).
Unset, the file locks are all there is: one machine, or one file system whose locks hold."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from common.errors import ConfigError, TemporaryFailure

COORDINATION_ENV = "GOVSHARE_COORDINATION"


def coordination_dsn() -> str | None:
    """The coordination database's URL, or None when unset; ConfigError for anything else."""
    raw = os.environ.get(COORDINATION_ENV, "").strip()
    if raw and not raw.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{COORDINATION_ENV}={raw.split('@')[-1]!r}: expected postgresql://user:password@host/db "
                          "(or unset, for the home's own file locks)")
    return raw or None


@contextmanager
def transaction(dsn: str, what: str) -> Iterator[Any]:
    """A psycopg connection in a transaction, committed when the block ends; unreachable is a
    TemporaryFailure (75), refused a ConfigError (2), both naming ``what`` and the host, never the
    password."""
    import psycopg

    where = dsn.split("@")[-1]
    try:
        with psycopg.connect(dsn, connect_timeout=10, autocommit=False) as db:
            yield db
            db.commit()
    except psycopg.OperationalError as exc:
        raise TemporaryFailure(f"{what}: the coordination database {where} is unreachable "
                               f"({str(exc).splitlines()[0][:160]}); retry later") from None
    except psycopg.Error as exc:
        raise ConfigError(f"{what}: the coordination database {where} refused it "
                          f"({exc.__class__.__name__}); check {COORDINATION_ENV} and the user's rights") from None


@contextmanager
def held(name: str, what: str) -> Iterator[None]:
    """PostgreSQL's advisory lock ``name`` for the block when GOVSHARE_COORDINATION is set (held
    by a transaction: a process that dies releases it); nothing otherwise."""
    dsn = coordination_dsn()
    if dsn is None:
        yield
        return
    with transaction(dsn, what) as db:
        db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
        yield
