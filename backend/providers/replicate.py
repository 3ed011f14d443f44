"""Replicate predictions: create, poll `GET /v1/predictions/{id}`, cancel `POST …/cancel`."""

from __future__ import annotations

from typing import Any

from backend.providers.base import VIDEO, GenerationSpec, PermanentProviderError
from backend.providers.remote import RUNNING, Http, RemoteFile, Status, prompt_of, remote_failure


class ReplicateService:
    label = "Replicate"

    def __init__(self, image_model: str, video_model: str) -> None:
        self.models = {"image": image_model, "video": video_model}

    async def submit(self, http: Http, spec: GenerationSpec) -> str:
        model = spec.model or self.models[spec.kind]
        model_input: dict[str, Any] = {"prompt": prompt_of(spec), "aspect_ratio": spec.aspect_ratio}
        if spec.kind == VIDEO:
            model_input["duration"] = spec.duration_seconds
        else:
            model_input["num_outputs"] = spec.num_images
        if spec.seed is not None:
            model_input["seed"] = spec.seed
        model_input.update(spec.params)
        # "owner/name" runs an official model's latest version; "owner/name:version" pins one.
        if ":" in model:
            url, body = "/v1/predictions", {"version": model.split(":", 1)[1], "input": model_input}
        else:
            url, body = f"/v1/models/{model}/predictions", {"input": model_input}
        prediction = Http.json(await http.call("POST", url, json=body, ok=(200, 201)), self.label)
        if not isinstance(prediction.get("id"), str):
            raise PermanentProviderError("provider_bad_response", f"{self.label} answered without a prediction id")
        return str(prediction["id"])

    async def check(self, http: Http, remote_id: str, spec: GenerationSpec) -> Status:
        prediction = Http.json(await http.call("GET", f"/v1/predictions/{remote_id}"), self.label)
        status = prediction.get("status")
        if status in ("starting", "processing"):
            return RUNNING
        if status == "succeeded":
            output = prediction.get("output")
            # Image models answer with a list of URLs, video models with one URL.
            urls = output if isinstance(output, list) else [output]
            return Status(files=[RemoteFile(url) for url in urls if isinstance(url, str)])
        if status == "canceled":
            return Status(error=PermanentProviderError("provider_canceled", f"the {self.label} job was canceled"))
        return Status(error=remote_failure(self.label, str(prediction.get("error") or status)))

    async def cancel(self, http: Http, remote_id: str, spec: GenerationSpec) -> None:
        await http.call("POST", f"/v1/predictions/{remote_id}/cancel")
