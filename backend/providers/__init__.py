"""Image providers, chosen by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from backend.config import Settings, SettingsError
from backend.providers.animals import AnimalsProvider
from backend.providers.base import (
    IMAGE,
    VIDEO,
    GeneratedImage,
    GeneratedOutput,
    GenerationSpec,
    PermanentProviderError,
    Provider,
    ProviderError,
    RemoteJob,
    TransientProviderError,
    kinds_of,
    seconds_per_output,
)
from backend.providers.fal import FalService
from backend.providers.higgsfield import HiggsfieldService
from backend.providers.noop import NoopProvider
from backend.providers.openai import OpenAIImagesProvider
from backend.providers.remote import RemoteService, SubmitAndPollProvider
from backend.providers.replicate import ReplicateService
from backend.providers.sora import SoraService

__all__ = [
    "IMAGE",
    "VIDEO",
    "GeneratedImage",
    "GeneratedOutput",
    "GenerationSpec",
    "PermanentProviderError",
    "Provider",
    "ProviderError",
    "RemoteJob",
    "TransientProviderError",
    "build_providers",
    "close_providers",
    "kinds_of",
    "seconds_per_output",
]


def _openai(settings: Settings) -> Provider:
    if settings.openai_api_key is None:
        raise SettingsError("invalid setting OPENAI_API_KEY: required when PROVIDERS includes openai")
    return OpenAIImagesProvider(
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key.get_secret_value(),
        model=settings.openai_model,
        size=settings.openai_image_size,
        timeout=settings.openai_timeout,
    )


def _secret(settings: Settings, setting: str, provider: str) -> str:
    value = getattr(settings, setting)
    if value is None or not value.get_secret_value():
        raise SettingsError(f"invalid setting {setting.upper()}: required when PROVIDERS includes {provider}")
    secret: str = value.get_secret_value()
    return secret


def _remote(
    settings: Settings,
    name: str,
    service: RemoteService,
    kinds: frozenset[str],
    base_url: str,
    headers: dict[str, str],
) -> Provider:
    return SubmitAndPollProvider(
        name,
        service,
        kinds,
        base_url,
        headers,
        settings.max_output_bytes,
        poll_initial=settings.poll_initial_seconds,
        poll_max=settings.poll_max_seconds,
        timeout=settings.remote_timeout,
    )


def _sora(settings: Settings) -> Provider:
    key = _secret(settings, "openai_api_key", "sora")
    service = SoraService(settings.openai_video_model)
    headers = {"Authorization": f"Bearer {key}"}
    return _remote(settings, "sora", service, frozenset({VIDEO}), settings.openai_base_url, headers)


def _replicate(settings: Settings) -> Provider:
    token = _secret(settings, "replicate_api_token", "replicate")
    service = ReplicateService(settings.replicate_image_model, settings.replicate_video_model)
    headers = {"Authorization": f"Bearer {token}"}
    return _remote(settings, "replicate", service, frozenset({IMAGE, VIDEO}), settings.replicate_base_url, headers)


def _fal(settings: Settings) -> Provider:
    key = _secret(settings, "fal_key", "fal")
    service = FalService(settings.fal_image_model, settings.fal_video_model)
    headers = {"Authorization": f"Key {key}"}
    return _remote(settings, "fal", service, frozenset({IMAGE, VIDEO}), settings.fal_queue_url, headers)


def _higgsfield(settings: Settings) -> Provider:
    key = _secret(settings, "higgsfield_api_key", "higgsfield")
    secret = _secret(settings, "higgsfield_secret", "higgsfield")
    service = HiggsfieldService(settings.higgsfield_image_model, settings.higgsfield_video_model)
    headers = {"Authorization": f"Key {key}:{secret}"}
    return _remote(settings, "higgsfield", service, frozenset({IMAGE, VIDEO}), settings.higgsfield_base_url, headers)


BUILT_IN: dict[str, Callable[[Settings], Provider]] = {
    "animals": lambda settings: AnimalsProvider(settings.image_provider_delay),
    "noop": lambda settings: NoopProvider(),
    "openai": _openai,
    "sora": _sora,
    "replicate": _replicate,
    "fal": _fal,
    "higgsfield": _higgsfield,
}


async def close_providers(providers: dict[str, Provider]) -> None:
    """Release what providers hold (HTTP connection pools); most hold nothing."""
    for provider in providers.values():
        aclose = getattr(provider, "aclose", None)
        if aclose is not None:
            await aclose()


def build_providers(settings: Settings) -> dict[str, Provider]:
    """The providers named in PROVIDERS plus those of PROVIDER_PLUGINS; raises SettingsError."""
    unknown = [name for name in settings.provider_names if name not in BUILT_IN]
    if unknown or not settings.provider_names:
        raise SettingsError(f"invalid setting PROVIDERS: unknown {unknown}; built-in: {', '.join(BUILT_IN)}")
    providers = {name: BUILT_IN[name](settings) for name in settings.provider_names}
    for entry in settings.plugin_entries:
        module_name, _, attr = entry.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise SettingsError(f"invalid setting PROVIDER_PLUGINS: cannot load {entry!r} ({exc})") from None
        provider: Provider = factory(settings)
        providers[provider.name] = provider
    if settings.default_provider not in providers:
        raise SettingsError(
            f"invalid setting DEFAULT_PROVIDER: {settings.default_provider!r} is not enabled ({', '.join(providers)})"
        )
    return providers
