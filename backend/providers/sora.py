"""OpenAI Videos (Sora): `POST /v1/videos`, poll `GET /v1/videos/{id}`, `GET …/content`, `DELETE`.

The API has no cancel; deleting the video is the nearest thing (see README.md).
"""

from __future__ import annotations

from backend.providers.base import GenerationSpec, PermanentProviderError
from backend.providers.remote import RUNNING, Http, RemoteFile, Status, prompt_of, remote_failure

SECONDS = (4, 8, 12)  # the values `seconds` accepts
SIZES = {"16:9": "1280x720", "9:16": "720x1280", "1:1": "1280x720"}  # no square size exists


class SoraService:
    label = "OpenAI Videos"

    def __init__(self, model: str) -> None:
        self.model = model

    async def submit(self, http: Http, spec: GenerationSpec) -> str:
        seconds = next((s for s in SECONDS if s >= spec.duration_seconds), SECONDS[-1])
        body = {
            "model": spec.model or self.model,
            "prompt": prompt_of(spec),
            "seconds": str(seconds),
            "size": SIZES.get(spec.aspect_ratio, SIZES["16:9"]),
            **spec.params,
        }
        video = Http.json(await http.call("POST", "/v1/videos", json=body), self.label)
        if not isinstance(video.get("id"), str):
            raise PermanentProviderError("provider_bad_response", f"{self.label} answered without a video id")
        return str(video["id"])

    async def check(self, http: Http, remote_id: str, spec: GenerationSpec) -> Status:
        response = await http.call("GET", f"/v1/videos/{remote_id}")
        video = Http.json(response, self.label)
        hint = response.headers.get("openai-poll-after-ms")
        wait = int(hint) / 1000 if hint and hint.isdigit() else None
        status = video.get("status")
        if status in ("queued", "in_progress"):
            return Status(wait=wait) if wait is not None else RUNNING
        if status == "completed":
            return Status(files=[RemoteFile(f"/v1/videos/{remote_id}/content?variant=video", auth=True)])
        error = video.get("error") if isinstance(video.get("error"), dict) else {}
        assert isinstance(error, dict)
        message = f"{error.get('message') or status} ({error.get('code') or 'failed'})"
        return Status(error=remote_failure(self.label, message))

    async def cancel(self, http: Http, remote_id: str, spec: GenerationSpec) -> None:
        await http.call("DELETE", f"/v1/videos/{remote_id}")
