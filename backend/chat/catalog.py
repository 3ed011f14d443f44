"""The model catalog: which provider models the assistant may recommend, from configuration.

A built-in file (`catalog.json` beside this module) lists the models we know; MODEL_CATALOG_FILE
names a deployment's own JSON file whose entries are added (or replace ours, by key). Only models
whose provider is enabled, and whose tool type the job engine and that provider can run, are offered.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from backend.config import SettingsError
from backend.jobs.schemas import GenerationCreate
from backend.providers import IMAGE, VIDEO, Provider, kinds_of

BUILT_IN_CATALOG = Path(__file__).resolve().parent / "catalog.json"


class ToolType(enum.StrEnum):
    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_TO_IMAGE = "image_to_image"
    TEXT_TO_VIDEO = "text_to_video"
    IMAGE_TO_VIDEO = "image_to_video"

    @property
    def video(self) -> bool:
        return self in (ToolType.TEXT_TO_VIDEO, ToolType.IMAGE_TO_VIDEO)

    @property
    def needs_input(self) -> bool:
        return self in (ToolType.IMAGE_TO_IMAGE, ToolType.IMAGE_TO_VIDEO)


CostTier = Literal["free", "low", "medium", "high", "premium"]
LatencyTier = Literal["fast", "medium", "slow"]
COST_ORDER: tuple[str, ...] = ("free", "low", "medium", "high", "premium")
LATENCY_ORDER: tuple[str, ...] = ("fast", "medium", "slow")


class CatalogModel(BaseModel):
    """One recommendable model. `defaults` seeds the job (e.g. numImages) and is not published."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    key: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    tool_type: ToolType
    provider: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=100)
    description: str = Field(min_length=1, max_length=300)
    cost_tier: CostTier
    latency_tier: LatencyTier
    defaults: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @property
    def cost_rank(self) -> int:
        return COST_ORDER.index(self.cost_tier)

    @property
    def latency_rank(self) -> int:
        return LATENCY_ORDER.index(self.latency_tier)


_ENTRIES = TypeAdapter(list[CatalogModel])


def read_catalog_file(path: Path, setting: str) -> list[CatalogModel]:
    """Parse one catalog file; any problem is a SettingsError naming the setting and the entry."""
    try:
        return _ENTRIES.validate_python(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise SettingsError(f"invalid setting {setting}: cannot read {path} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise SettingsError(f"invalid setting {setting}: {path} is not JSON ({exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise SettingsError(f"invalid setting {setting}: {path} entry {where}: {first['msg']}") from None


def load_catalog(extra_file: Path | None) -> list[CatalogModel]:
    """Built-in models, then the deployment's: a deployment entry replaces a built-in one of the same key."""
    by_key = {model.key: model for model in read_catalog_file(BUILT_IN_CATALOG, "MODEL_CATALOG (built-in)")}
    if extra_file is not None:
        for model in read_catalog_file(extra_file, "MODEL_CATALOG_FILE"):
            by_key[model.key] = model
    return list(by_key.values())


def runnable_tool_types(provider: Provider) -> frozenset[ToolType]:
    """What the job engine and this provider can run today.

    The provider declares its kinds; image-to-X also needs jobs that take input images. Both are
    read from the engine itself, so the catalog grows as the engine does.
    """
    kinds = kinds_of(provider)
    takes_inputs = "input_images" in GenerationCreate.model_fields
    types = set()
    if IMAGE in kinds:
        types.add(ToolType.TEXT_TO_IMAGE)
        if takes_inputs:
            types.add(ToolType.IMAGE_TO_IMAGE)
    if VIDEO in kinds:
        types.add(ToolType.TEXT_TO_VIDEO)
        if takes_inputs:
            types.add(ToolType.IMAGE_TO_VIDEO)
    return frozenset(types)


class Catalog:
    """The models on offer, in configuration order."""

    def __init__(self, models: list[CatalogModel]) -> None:
        self.models = models
        self.by_key = {model.key: model for model in models}

    @classmethod
    def enabled(cls, models: list[CatalogModel], providers: Mapping[str, Provider]) -> Catalog:
        """Only the models this deployment can run: provider enabled, tool type supported."""
        return cls(
            [
                model
                for model in models
                if model.provider in providers and model.tool_type in runnable_tool_types(providers[model.provider])
            ]
        )

    def of_type(self, tool_type: ToolType) -> list[CatalogModel]:
        return [model for model in self.models if model.tool_type == tool_type]
