"""fal queue: `POST {queue}/{model}`, then the returned status, response and cancel URLs."""

from __future__ import annotations

from typing import Any

from backend.providers.base import VIDEO, GenerationSpec, PermanentProviderError, ProviderError
from backend.providers.remote import RUNNING, Http, RemoteFile, Status, media_urls, prompt_of, remote_failure

# fal's image models name sizes; its video models take the ratio itself.
IMAGE_SIZES = {"1:1": "square_hd", "16:9": "landscape_16_9", "9:16": "portrait_16_9"}


class FalService:
    label = "fal"

    def __init__(self, image_model: str, video_model: str) -> None:
        self.models = {"image": image_model, "video": video_model}

    def _model(self, spec: GenerationSpec) -> str:
        return spec.model or self.models[spec.kind]

    def _request_url(self, spec: GenerationSpec, remote_id: str) -> str:
        """Where a request lives: under the model's owner/app only, as fal-client builds it on resume."""
        owner, _, rest = self._model(spec).partition("/")
        return f"/{owner}/{rest.split('/', 1)[0]}/requests/{remote_id}"

    async def submit(self, http: Http, spec: GenerationSpec) -> str:
        body: dict[str, Any] = {"prompt": prompt_of(spec)}
        if spec.kind == VIDEO:
            body |= {"duration": str(spec.duration_seconds), "aspect_ratio": spec.aspect_ratio}
        else:
            body |= {"num_images": spec.num_images, "image_size": IMAGE_SIZES.get(spec.aspect_ratio, "square_hd")}
        if spec.seed is not None:
            body["seed"] = spec.seed
        body.update(spec.params)
        answer = Http.json(await http.call("POST", f"/{self._model(spec)}", json=body, ok=(200, 201, 202)), self.label)
        if not isinstance(answer.get("request_id"), str):
            raise PermanentProviderError("provider_bad_response", f"{self.label} answered without a request_id")
        return str(answer["request_id"])

    async def check(self, http: Http, remote_id: str, spec: GenerationSpec) -> Status:
        base = self._request_url(spec, remote_id)
        # 202 while IN_QUEUE or IN_PROGRESS, 200 once COMPLETED (successfully or not).
        answer = Http.json(await http.call("GET", f"{base}/status", ok=(200, 202)), self.label)
        if answer.get("status") != "COMPLETED":
            return RUNNING
        try:
            body = Http.json(await http.call("GET", base), self.label)
        except ProviderError as exc:
            # The request ran and failed: its result is the model's error, and the request is over.
            if exc.code in ("provider_unavailable", "provider_rate_limited"):
                return Status(error=remote_failure(self.label, exc.message))
            if exc.transient:
                raise  # we could not reach fal: look again
            return Status(error=exc)
        nsfw = body.get("has_nsfw_concepts")
        if isinstance(nsfw, list) and nsfw and all(nsfw):
            return Status(error=PermanentProviderError("content_policy", f"{self.label} flagged every image as NSFW"))
        return Status(files=[RemoteFile(url) for url in media_urls(body)])

    async def cancel(self, http: Http, remote_id: str, spec: GenerationSpec) -> None:
        # PUT, not POST; 400 ALREADY_COMPLETED means there was nothing left to stop.
        await http.call("PUT", f"{self._request_url(spec, remote_id)}/cancel", ok=(200, 202, 400))
