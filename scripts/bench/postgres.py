"""The PostgreSQL benches' database handling (bench-pg, its claim scenario, bench-jobs):
they run on a database they are given, emptied first so earlier runs weigh on nothing."""

from __future__ import annotations

from typing import Any


def pg_async(url: str) -> str:
    """The SQLAlchemy URL of ``url`` (postgresql://... as given) with the asyncpg driver."""
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


async def reset_pg(url: str) -> None:
    """Empty the bench's PostgreSQL database (its public schema)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


async def pg_fetch(url: str, sql: str) -> list[Any]:
    """The rows of one query, on a connection of its own."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()
