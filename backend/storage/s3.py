"""S3-compatible object storage (AWS, MinIO, R2, Yandex…), through obstore.

Two stores share the bucket and the credentials: one talks to S3_ENDPOINT_INTERNAL (what
this process can reach, e.g. http://minio:9000 inside compose), the other never sends a
request and only signs URLs for S3_PUBLIC_ENDPOINT (what clients reach, e.g.
http://localhost:9000). A SigV4 signature covers the Host header, so a URL signed for the
internal host would be refused when a client sends it to the public one.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote, urlsplit

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store
from starlette.responses import RedirectResponse, Response

from backend.config import Settings
from backend.storage import KEY_PATTERN, ObjectTooLarge, StorageUnavailable, UploadTarget

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

T = TypeVar("T")
# A redirect may be cached for a while, but never past the URL it points to.
REDIRECT_CACHE_FRACTION = 0.5


class S3Storage:
    name = "s3"

    def __init__(self, settings: Settings) -> None:
        assert settings.s3_bucket is not None  # the settings validator guarantees it
        self.bucket = settings.s3_bucket
        self.region = settings.s3_region
        self.path_style = settings.s3_use_path_style
        self.use_public_urls = settings.use_public_urls
        self.ttl = timedelta(seconds=settings.s3_url_ttl)
        internal = settings.s3_endpoint_internal
        self.public_endpoint = settings.s3_public_endpoint or internal
        self.store = self._store(internal, sign_only=False)
        self.signer = self._store(self.public_endpoint, sign_only=True)

    def _store(self, endpoint: str | None, *, sign_only: bool) -> S3Store:
        client: ClientConfig = {
            "allow_http": endpoint is not None and endpoint.startswith("http://"),
            # An unreachable store must fail a request or an attempt within seconds, not minutes:
            # the job is retried by the worker, the request answered 503.
            "connect_timeout": "2s",
            "timeout": "30s",
        }
        retry: RetryConfig = {"max_retries": 2, "retry_timeout": timedelta(seconds=10)}
        kwargs = {}
        if endpoint is not None:
            # obstore appends the bucket itself to a path-style endpoint; a virtual-hosted one names it.
            kwargs["endpoint"] = endpoint if self.path_style else _objects_base(endpoint, self.bucket, False)
        return S3Store(
            self.bucket,
            region=self.region,
            virtual_hosted_style_request=not self.path_style,
            client_options=client,
            retry_config=retry,
            **kwargs,  # type: ignore[arg-type]
        )

    async def save(self, key: str, data: bytes, content_type: str) -> None:
        try:
            await _call(obstore.put_async(self.store, key, data, attributes={"Content-Type": content_type}))
        except FileNotFoundError as exc:
            # A write has no object to miss: "not found" here is the bucket (a store that came
            # back empty, a bucket not created yet), which is the store's outage, not the job's.
            raise StorageUnavailable(f"object store error: {_first_line(exc)}") from exc

    async def read(self, key: str, limit: int) -> bytes | None:
        try:
            result = await _call(obstore.get_async(self.store, key))
        except FileNotFoundError:
            return None
        if result.meta["size"] > limit:
            raise ObjectTooLarge(result.meta["size"])
        return bytes(await _call(result.bytes_async()))

    async def delete(self, keys: list[str]) -> None:
        if keys:
            await _call(obstore.delete_async(self.store, keys))

    async def delete_prefix(self, prefix: str) -> None:
        listed = await _call(obstore.list(self.store, prefix).collect_async())
        await self.delete([meta["path"] for meta in listed])

    def url(self, key: str, base_url: str) -> str:
        if self.use_public_urls:
            return self.public_url(key)
        # A stable app URL that redirects to a freshly signed one: job representations are kept
        # by clients (and sent in events and webhooks), and must not hold a URL that expires.
        return f"{base_url}/images/{key}"

    def public_url(self, key: str) -> str:
        path = quote(key)
        if self.public_endpoint is None:
            return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{path}"
        return f"{_objects_base(self.public_endpoint, self.bucket, self.path_style)}/{path}"

    async def serve(self, key: str) -> Response | None:
        if not KEY_PATTERN.fullmatch(key):
            return None
        if self.use_public_urls:
            return RedirectResponse(self.public_url(key), 302)
        url = await _call(obstore.sign_async(self.signer, "GET", key, self.ttl))
        max_age = int(self.ttl.total_seconds() * REDIRECT_CACHE_FRACTION)
        return RedirectResponse(url, 302, headers={"Cache-Control": f"private, max-age={max_age}"})

    async def upload_target(self, key: str, content_type: str, size: int, base_url: str) -> UploadTarget:
        url = await _call(obstore.sign_async(self.signer, "PUT", key, self.ttl))
        return UploadTarget(url, {"Content-Type": content_type}, datetime.now(UTC) + self.ttl)

    async def close(self) -> None:
        return None


def _objects_base(endpoint: str, bucket: str, path_style: bool) -> str:
    """The base URL the objects of `bucket` hang under, path-style or virtual-hosted."""
    endpoint = endpoint.rstrip("/")
    if path_style:
        return f"{endpoint}/{bucket}"
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{bucket}.{parts.netloc}{parts.path}"


async def _call(operation: Awaitable[T]) -> T:
    """Run one store operation; every failure but an absent object means the store is unavailable."""
    try:
        return await operation
    except FileNotFoundError as exc:
        if "NoSuchBucket" in str(exc):  # not an absent object: the whole bucket is missing
            raise StorageUnavailable("object store error: NoSuchBucket (the bucket does not exist)") from exc
        raise
    except (BaseError, OSError) as exc:
        raise StorageUnavailable(f"object store error: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
