"""OpenAI-compatible routes under /v1. Errors here speak OpenAI's shape (see errors.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from backend.deps import CurrentAccount, ImageStorage, Service, base_url
from backend.jobs.endpoints import job_out
from backend.jobs.schemas import GenerationCreate
from backend.openai_compat import service as compat
from backend.openai_compat.schemas import ImageData, ImageGenerationRequest, ImagesResponse

router = APIRouter(prefix="/v1", tags=["openai-compatible"])


@router.post("/images/generations", response_model=ImagesResponse, response_model_exclude_none=True)
async def generate_images(
    body: ImageGenerationRequest,
    request: Request,
    service: Service,
    storage: ImageStorage,
    account: CurrentAccount,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
) -> ImagesResponse:
    """OpenAI's images API: runs an ordinary job and answers when it is done (up to OPENAI_COMPAT_WAIT)."""
    created = await compat.create_job(
        service,
        account,
        GenerationCreate(num_images=body.n, prompt=body.prompt, provider=compat.provider_of(body.model)),
        idempotency_key,
    )
    waited = request.app.state.settings.openai_compat_wait
    job = await compat.wait_finished(service, account, created, waited)
    compat.raise_unless_completed(job, waited)
    if body.response_format == "b64_json":
        data = [ImageData(b64_json=encoded) for encoded in await compat.b64_images(job, storage)]
    else:
        data = [ImageData(url=url) for url in job_out(job, storage, base_url(request)).image_urls or []]
    return ImagesResponse(created=int(job.created_at.timestamp()), data=data)
