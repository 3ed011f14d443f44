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
from backend.providers.noop import NoopProvider
from backend.providers.openai import OpenAIImagesProvider

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


BUILT_IN: dict[str, Callable[[Settings], Provider]] = {
    "animals": lambda settings: AnimalsProvider(settings.image_provider_delay),
    "noop": lambda settings: NoopProvider(),
    "openai": _openai,
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
