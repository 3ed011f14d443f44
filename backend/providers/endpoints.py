"""What a client may ask for: the enabled providers and the kinds of output each makes."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import Field

from backend.deps import Service, current_account
from backend.jobs.schemas import CamelModel
from backend.providers.base import kinds_of

router = APIRouter(dependencies=[Depends(current_account)])


class ProviderOut(CamelModel):
    name: str
    default: bool = Field(description="Used when a job names no provider.")
    kinds: list[str] = Field(description="What it makes: `image`, `video`.")


@router.get("/providers", response_model=list[ProviderOut], tags=["providers"])
async def list_providers(service: Service) -> list[ProviderOut]:
    """The providers a job may name, the default first."""
    default = service.settings.default_provider
    return [
        ProviderOut(name=name, default=name == default, kinds=sorted(kinds_of(provider)))
        for name, provider in sorted(service.providers.items(), key=lambda item: (item[0] != default, item[0]))
    ]
