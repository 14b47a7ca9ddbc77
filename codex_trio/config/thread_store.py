"""The `[thread_store]` table of config.toml: which `ThreadStore` a server uses.

```toml
[thread_store]
kind = "postgres"                                   # or "local" (the default, also with no table)
url = "postgresql://user@db.internal:5432/codex"    # a password may come from PGPASSWORD instead
lease_ttl_secs = 30                                 # a crashed server's threads free up after this
pool_size = 4                                       # connections (and worker threads) at most
```

Pure: parsing and validation only (the store's own defaults apply to keys left out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from codex_trio.records import by_value


class ThreadStoreConfigError(ValueError):
    """A `[thread_store]` table that cannot be used (the message names the key)."""


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadStoreConfig:
    kind: Literal["local", "postgres"] = "local"
    url: str | None = attrs.field(default=None, repr=False)
    #: None: the store's default (30 s, 4 connections).
    lease_ttl_secs: float | None = None
    pool_size: int | None = None


def thread_store_config(raw: Mapping[str, Any]) -> ThreadStoreConfig:
    """The store settings of a merged config table; raises `ThreadStoreConfigError`."""
    table = raw.get("thread_store")
    if table is None:
        return ThreadStoreConfig()
    if not isinstance(table, Mapping):
        raise ThreadStoreConfigError("thread_store: expected a table")
    kind = table.get("kind", "local")
    if kind == "local":
        return ThreadStoreConfig()
    if kind != "postgres":
        raise ThreadStoreConfigError(
            f"thread_store.kind: unknown variant `{kind}`, expected `local` or `postgres`"
        )
    url = table.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ThreadStoreConfigError(
            "thread_store.url: expected postgresql://user[:password]@host:port/dbname"
        )
    ttl = table.get("lease_ttl_secs")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise ThreadStoreConfigError("thread_store.lease_ttl_secs: expected a positive number of seconds")
    pool = table.get("pool_size")
    if pool is not None and (isinstance(pool, bool) or not isinstance(pool, int) or pool < 1):
        raise ThreadStoreConfigError("thread_store.pool_size: expected a positive integer")
    return ThreadStoreConfig("postgres", url, None if ttl is None else float(ttl), pool)
