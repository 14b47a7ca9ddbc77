"""The `[thread_store]` table of config.toml: which `ThreadStore` a server uses.

```toml
[thread_store]
kind = "postgres"                                   # or "local" (the default, also with no table)
url = "postgresql://user@db.internal:5432/codex"    # a password may come from PGPASSWORD instead
lease_ttl_secs = 30                                 # a crashed server's threads free up after this
pool_size = 4                                       # connections (and worker threads) at most
```

Pure: parsing and validation only. A URL is never logged whole: `redacted_url` hides its password.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import attrs

DEFAULT_LEASE_TTL = 30.0
DEFAULT_POOL_SIZE = 4


class ThreadStoreConfigError(ValueError):
    """A `[thread_store]` table that cannot be used (the message names the key)."""


@attrs.frozen
class ThreadStoreConfig:
    kind: Literal["local", "postgres"] = "local"
    url: str | None = attrs.field(default=None, repr=False)
    lease_ttl_secs: float = DEFAULT_LEASE_TTL
    pool_size: int = DEFAULT_POOL_SIZE


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
    ttl = table.get("lease_ttl_secs", DEFAULT_LEASE_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        raise ThreadStoreConfigError("thread_store.lease_ttl_secs: expected a positive number of seconds")
    pool = table.get("pool_size", DEFAULT_POOL_SIZE)
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ThreadStoreConfigError("thread_store.pool_size: expected a positive integer")
    return ThreadStoreConfig("postgres", url, float(ttl), pool)


def redacted_url(url: str) -> str:
    """The URL with any password replaced by `***` (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
