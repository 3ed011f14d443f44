"""Named FastAPI dependencies shared by every capability's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backend.accounts import ANONYMOUS, Account
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


Service = Annotated[JobService, Depends(get_service)]
ImageStorage = Annotated[Storage, Depends(get_storage)]
CurrentAccount = Annotated[Account, Depends(current_account)]


def base_url(request: Request) -> str:
    configured: str | None = request.app.state.settings.public_base_url
    return (configured or str(request.base_url)).rstrip("/")
