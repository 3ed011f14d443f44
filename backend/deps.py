"""Named FastAPI dependencies shared by every capability's routes."""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import Depends, Request

from backend.accounts import ANONYMOUS, Account
from backend.accounts.limits import RateLimiter
from backend.jobs.service import JobService
from backend.storage import Storage


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` one in a thread pool.
async def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def current_account(request: Request) -> Account:
    """The account the request acts as, as AuthMiddleware found it (anonymous without a key)."""
    account: Account = getattr(request.state, "account", ANONYMOUS)
    return account


CurrentAccount = Annotated[Account, Depends(current_account)]


async def rate_limit(request: Request, account: CurrentAccount) -> None:
    """Spend one of the account's creating requests (429 `rate_limited` when none is left)."""
    await _take(request, account, backlog=False)


async def rate_limit_jobs(request: Request, account: CurrentAccount) -> None:
    """As `rate_limit`, and 429 `queue_full` beyond MAX_PENDING_JOBS_PER_KEY pending jobs."""
    await _take(request, account, backlog=True)


async def _take(request: Request, account: Account, *, backlog: bool) -> None:
    limiter: RateLimiter = request.app.state.limiter
    decision = await limiter.take(account, backlog=backlog)
    # AuthMiddleware adds these to whatever response the route returns.
    headers: list[tuple[bytes, bytes]] | None = getattr(request.state, "response_headers", None)
    if decision is not None and headers is not None:
        headers += [(name.lower().encode(), value.encode()) for name, value in decision.headers().items()]


Service = Annotated[JobService, Depends(get_service)]
ImageStorage = Annotated[Storage, Depends(get_storage)]

# Attach to every route that creates something: `@router.post(..., dependencies=[RateLimited])`.
RateLimited = Depends(rate_limit)
JobRateLimited = Depends(rate_limit_jobs)


def hot_deps(request: Request) -> tuple[JobService, Account]:
    """`Service` and `CurrentAccount` without FastAPI's dependency machinery, for the hottest routes."""
    service: JobService = request.app.state.service
    account: Account = getattr(request.state, "account", ANONYMOUS)
    return service, account


def base_url(request: Request) -> str:
    configured: str | None = request.app.state.settings.public_base_url
    if configured:
        return configured.rstrip("/")
    scope = request.scope
    server = tuple(scope["server"]) if scope.get("server") else None
    return _base_url(scope["scheme"], server, scope.get("root_path", ""), request.headers.get("host"))


@functools.lru_cache(maxsize=64)
def _base_url(scheme: str, server: tuple[str, int] | None, root_path: str, host: str | None) -> str:
    """Starlette's `request.base_url` for these parts, built once per distinct value."""
    headers = [(b"host", host.encode("latin-1"))] if host is not None else []
    scope = {"type": "http", "scheme": scheme, "server": server, "root_path": root_path, "path": "/"}
    return str(Request(scope | {"headers": headers}).base_url).rstrip("/")
