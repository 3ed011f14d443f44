"""Typed settings, read from the environment and `.env`."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; env var names are the upper-case field names."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str | None = None
    app_name: str = "Generation Jobs API"
    version: str = "0.1.0"
    debug: bool = False

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Path("./data")
    public_base_url: str | None = None
    cors_origins: str = Field(
        "", description="Comma-separated origins (e.g. https://app.example.com) allowed to call the API from a browser."
    )
    embedded_db_port: int = Field(5433, ge=1, le=65535)
    run_migrations: bool = True
    db_pool_size: int = Field(20, ge=1, le=200)

    # all: the HTTP API and a worker in one process (the default). api: HTTP only, claims nothing.
    # worker: claims and runs jobs, and serves only /healthz, /readyz and /metrics.
    role: Literal["all", "api", "worker"] = "all"
    worker_enabled: bool = True
    worker_concurrency: int = Field(32, ge=1, le=1000)
    worker_poll_interval: float = Field(1.0, gt=0, le=3600)
    worker_claim_batch: int = Field(32, ge=1, le=1000)
    lease_seconds: float = Field(30.0, ge=1, le=86400)
    max_attempts: int = Field(3, ge=1, le=100)
    job_timeout: float = Field(300.0, gt=0, le=86400)
    retry_base_delay: float = Field(1.0, ge=0, le=3600)
    retry_max_delay: float = Field(60.0, ge=0, le=86400)
    storage_wait_seconds: float = Field(60.0, ge=0, le=3600)
    shutdown_grace_seconds: float = Field(10.0, ge=0, le=3600)
    job_retention_seconds: float | None = Field(None, gt=0)

    providers: str = Field("animals", description="Comma-separated built-in providers to enable.")
    provider_plugins: str = Field(
        "", description="Comma-separated module:factory entries; factory(settings) -> Provider."
    )
    default_provider: str = "animals"
    image_provider_delay: float = Field(1.0, ge=0, le=600)
    max_images_per_job: int = Field(10, ge=1, le=1000)

    openai_base_url: str = "https://api.openai.com"
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-image-1"
    openai_image_size: str = "1024x1024"
    openai_timeout: float = Field(120.0, gt=0, le=3600)
    openai_video_model: str = "sora-2"

    # Submit-and-poll services (sora, replicate, fal, higgsfield); see backend/providers/README.md.
    max_output_bytes: int = Field(200 * 1024 * 1024, ge=1024, description="Largest output downloaded from a service.")
    poll_initial_seconds: float = Field(1.0, gt=0, le=600)
    poll_max_seconds: float = Field(30.0, gt=0, le=3600)
    remote_timeout: float = Field(60.0, gt=0, le=3600, description="One HTTP call to a service.")
    replicate_api_token: SecretStr | None = None
    replicate_base_url: str = "https://api.replicate.com"
    replicate_image_model: str = "black-forest-labs/flux-schnell"
    replicate_video_model: str = "wan-video/wan-2.2-t2v-fast"
    fal_key: SecretStr | None = None
    fal_queue_url: str = "https://queue.fal.run"
    fal_image_model: str = "fal-ai/flux/dev"
    fal_video_model: str = "fal-ai/kling-video/v2.1/standard/text-to-video"
    higgsfield_api_key: SecretStr | None = None
    higgsfield_secret: SecretStr | None = None
    higgsfield_base_url: str = "https://platform.higgsfield.ai"
    higgsfield_image_model: str = "higgsfield-ai/soul/standard"
    higgsfield_video_model: str = "higgsfield-ai/dop/standard"

    openai_compat_wait: float = Field(
        300.0, gt=0, le=3600, description="How long POST /v1/images/generations waits for its job."
    )
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_endpoint_internal: str | None = Field(None, description="What the app talks to; unset = AWS.")
    s3_public_endpoint: str | None = Field(None, description="The host in URLs handed to clients.")
    s3_use_path_style: bool = False
    use_public_urls: bool = False
    s3_url_ttl: int = Field(3600, ge=1, le=7 * 24 * 3600)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1, le=5 * 1024**3)
    upload_ttl_hours: float = Field(24.0, gt=0, le=24 * 365)
    # Signs the app's own URLs (local uploads; file URLs when AUTH_REQUIRED=true). Replicas must
    # share it; unset = one the app makes once and keeps in the database (table app_secrets).
    signing_secret: SecretStr | None = None
    signed_url_ttl: int = Field(3600, ge=60, le=7 * 24 * 3600, description="Seconds a signed file URL works.")
    # The chat assistant.
    model_catalog_file: Path | None = Field(
        None, description="A JSON file of catalog models added to (or replacing, by key) the built-in ones."
    )
    prompt_enhancer: Literal["none", "openai"] = "none"
    prompt_enhancer_base_url: str | None = Field(
        None, description="An OpenAI-compatible server; OPENAI_BASE_URL if unset."
    )
    prompt_enhancer_model: str = "gpt-4o-mini"
    prompt_enhancer_timeout: float = Field(5.0, gt=0, le=60)
    chat_result_poll_interval: float = Field(1.0, gt=0, le=3600)
    sse_heartbeat_seconds: float = Field(15.0, gt=0, le=3600)
    webhook_secret: SecretStr | None = Field(
        None,
        description="whsec_… secret of the anonymous account's webhooks (unset: generated, kept in the database).",
    )
    webhook_timeout: float = Field(10.0, gt=0, le=300)
    webhook_max_attempts: int = Field(8, ge=1, le=50)
    webhook_retry_base_delay: float = Field(5.0, ge=0, le=86400)
    webhook_retry_max_delay: float = Field(36000.0, ge=0, le=604800)
    webhook_concurrency: int = Field(16, ge=1, le=1000)
    webhook_allow_private: bool = False

    # Accounts (backend/accounts): API keys, limits and quotas.
    auth_required: bool = False
    allow_anonymous: bool = Field(False, description="Serve anonymous requests on a non-loopback HOST.")
    rate_limit_per_minute: int = Field(600, ge=0, le=1_000_000, description="Creating requests; 0 = off.")
    max_pending_jobs_per_key: int = Field(10_000, ge=0, le=100_000_000, description="0 = no limit.")
    max_concurrent_jobs_per_key: int | None = Field(None, ge=1, le=100_000, description="Unset = no limit.")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    debugpy_enabled: bool = False
    debugpy_host: str = "127.0.0.1"
    debugpy_port: int = Field(5678, ge=1, le=65535)
    debugpy_wait: bool = False

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("s3_endpoint_internal", "s3_public_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_storage(self) -> Settings:
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("S3_BUCKET must be set when STORAGE_BACKEND=s3")
        return self

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        secret = value.get_secret_value()
        try:
            encoded = secret.removeprefix("whsec_").rstrip("=")
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except ValueError:
            key = b""
        if not secret.startswith("whsec_") or len(key) < 16:
            raise ValueError("must be whsec_ followed by at least 16 base64-encoded bytes")
        return value

    @property
    def serves_api(self) -> bool:
        return self.role != "worker"

    @property
    def runs_worker(self) -> bool:
        """ROLE=api never claims; WORKER_ENABLED=false turns the worker of ROLE=all off too."""
        return self.role != "api" and self.worker_enabled

    @field_validator("role", mode="before")
    @classmethod
    def _lower_role(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def provider_names(self) -> list[str]:
        return [name.strip() for name in self.providers.split(",") if name.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def plugin_entries(self) -> list[str]:
        return [entry.strip() for entry in self.provider_plugins.split(",") if entry.strip()]

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL in the form SQLAlchemy's asyncpg dialect wants."""
        return _with_scheme(self._require_url(), "postgresql+asyncpg")

    @property
    def asyncpg_dsn(self) -> str:
        """The database URL in the form asyncpg itself wants."""
        return _with_scheme(self._require_url(), "postgresql")

    def _require_url(self) -> str:
        if self.database_url is None:
            raise RuntimeError("DATABASE_URL is not set and no embedded database was started")
        return self.database_url


def _with_scheme(url: str, scheme: str) -> str:
    return scheme + url[url.index("://") :]


class SettingsError(Exception):
    """Settings could not be loaded; the message is one line naming the setting."""


def load_settings() -> Settings:
    """Load settings, turning pydantic's report into one line per bad setting."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across settings names them in its message
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            name = str(error["loc"][0]).upper()
            problems.append(f"{name}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("invalid setting " + "; ".join(problems)) from None
