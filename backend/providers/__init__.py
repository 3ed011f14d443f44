"""Image providers, chosen by name."""

from __future__ import annotations

from backend.config import Settings
from backend.providers.animals import AnimalsProvider
from backend.providers.base import (
    GeneratedImage,
    GenerationSpec,
    PermanentProviderError,
    Provider,
    ProviderError,
    TransientProviderError,
)
from backend.providers.noop import NoopProvider

__all__ = [
    "GeneratedImage",
    "GenerationSpec",
    "PermanentProviderError",
    "Provider",
    "ProviderError",
    "TransientProviderError",
    "build_providers",
]


def build_providers(settings: Settings) -> dict[str, Provider]:
    """The providers named in PROVIDERS, built from settings."""
    available: dict[str, Provider] = {
        "animals": AnimalsProvider(settings.image_provider_delay),
        "noop": NoopProvider(),
    }
    return {name: available[name] for name in settings.provider_names}
