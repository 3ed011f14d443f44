"""Higgsfield platform API: `POST /{model_id}`, poll `GET /requests/{id}/status`, cancel while queued."""

from __future__ import annotations

from typing import Any

from backend.providers.base import VIDEO, GenerationSpec, PermanentProviderError
from backend.providers.remote import RUNNING, Http, RemoteFile, Status, media_urls, prompt_of, remote_failure


class HiggsfieldService:
    label = "Higgsfield"

    def __init__(self, image_model: str, video_model: str) -> None:
        self.models = {"image": image_model, "video": video_model}

    async def submit(self, http: Http, spec: GenerationSpec) -> str:
        body: dict[str, Any] = {"prompt": prompt_of(spec), "aspect_ratio": spec.aspect_ratio}
        if spec.kind == VIDEO:
            body["duration"] = spec.duration_seconds
        else:
            body["batch_size"] = spec.num_images  # Soul's parameter (the v1 API's, kept by the current one)
        if spec.seed is not None:
            body["seed"] = spec.seed
        body.update(spec.params)
        model = spec.model or self.models[spec.kind]
        answer = Http.json(await http.call("POST", f"/{model}", json=body, ok=(200, 201, 202)), self.label)
        if not isinstance(answer.get("request_id"), str):
            raise PermanentProviderError("provider_bad_response", f"{self.label} answered without a request_id")
        return str(answer["request_id"])

    async def check(self, http: Http, remote_id: str, spec: GenerationSpec) -> Status:
        answer = Http.json(await http.call("GET", f"/requests/{remote_id}/status"), self.label)
        status = answer.get("status")
        if status in ("queued", "in_progress"):
            return RUNNING
        if status == "completed":
            return Status(files=[RemoteFile(url) for url in media_urls(answer)])
        if status == "nsfw":
            return Status(
                error=PermanentProviderError("content_policy", f"{self.label} moderation refused the request")
            )
        if status == "canceled":
            return Status(error=PermanentProviderError("provider_canceled", f"the {self.label} request was canceled"))
        return Status(error=remote_failure(self.label, str(answer.get("error") or status)))

    async def cancel(self, http: Http, remote_id: str, spec: GenerationSpec) -> None:
        # Only a queued request can be canceled (202); one already in progress answers 400 and runs on.
        await http.call("POST", f"/requests/{remote_id}/cancel", ok=(200, 202))
