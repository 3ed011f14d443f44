"""The recommender: deterministic rules over the catalog and the person's words.

No model is asked which tool fits: the rules below read intent words (several phrasings of
video, animation and motion, and their negations), attachments, and hints of shape and length,
then pick a fast and a high-quality model of the fitting tool type. The same message and catalog
always give the same options, so the table of phrasings in the tests pins the behaviour down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from backend.chat.catalog import Catalog, CatalogModel, ToolType

MIN_DURATION, MAX_DURATION = 1, 20
MAX_OPTIONS = 4

_NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
    )
}  # fmt: skip
_NUMBER = r"\b(\d{1,3}(?:\.\d+)?|" + "|".join(_NUMBER_WORDS) + r"|a|an|half\s+a)"

_VIDEO_WORDS = re.compile(
    r"\b("
    r"videos?|video-?clips?|clips?|movies?|films?|footage|animat(?:e|ed|es|ing|ion|ions)|"
    r"motion|moving|moves?|gifs?|time-?lapse|cinemagraph|slow-?mo(?:tion)?|reels?|"
    r"trailers?|cartoon\s+clip|bring\s+(?:it|this|them|her|him|.{1,30}?)\s+to\s+life|come\s+alive|"
    r"in\s+action|dancing|flying\s+around|walks?\s+around|make\s+(?:it|this|them)\s+(?:move|dance|walk|fly|run)"
    r")\b"
)
# "no video", "not an animation", "without motion", "don't animate it", "a still image".
_NEGATED_VIDEO = re.compile(
    r"\b(?:no|not|without|never|don'?t\s+(?:want|need|make|animate)|do\s+not\s+(?:want|need|make|animate)|"
    r"rather\s+than)\s+(?:an?\s+|any\s+|the\s+|it\s+)?"
    r"(?:videos?|clips?|movies?|films?|animat\w*|motion|moving|gifs?)\b"
)
_STILL_WORDS = re.compile(r"\b(still\s+(?:image|picture|photo|frame)|static\s+(?:image|picture)|photograph)\b")

_DURATION = re.compile(_NUMBER + r"[\s-]*(seconds?|secs?|s|minutes?|mins?|m)\b(?:\s+long)?")
_RATIO = re.compile(r"\b(\d{1,2})\s*[:x\u00d7/]\s*(\d{1,2})\b")
_COUNT = re.compile(_NUMBER + r"\s+(?:different\s+)?(?:images|pictures|photos|variations|versions|options|shots)\b")
_VERTICAL = re.compile(
    r"\b(vertical|portrait(?:\s+orientation|\s+mode)?|tall|phone\s+(?:screen|wallpaper)|tiktok|stories|story|"
    r"reels?|shorts)\b"
)
_HORIZONTAL = re.compile(
    r"\b(horizontal|landscape|widescreen|wide\s*screen|wide|cinematic|youtube|desktop\s+wallpaper|banner)\b"
)
_SQUARE = re.compile(r"\b(square|instagram\s+post|avatar|profile\s+picture|icon)\b")


@dataclass(frozen=True)
class Hints:
    """What the words say about the wanted output."""

    wants_video: bool
    aspect_ratio: str | None = None
    duration_seconds: int | None = None
    num_images: int | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class OptionDraft:
    model: CatalogModel
    label: str
    explanation: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recommendation:
    intro: str
    options: list[OptionDraft]


def _number(word: str) -> float | None:
    word = re.sub(r"\s+", " ", word)
    if word in ("a", "an"):
        return 1
    if word == "half a":
        return 0.5
    if word in _NUMBER_WORDS:
        return _NUMBER_WORDS[word]
    try:
        return float(word)
    except ValueError:
        return None


def read_hints(text: str) -> Hints:
    """Intent, aspect ratio, duration and count hints from a message, deterministically."""
    lowered = text.lower()
    notes: list[str] = []

    duration: int | None = None
    for match in _DURATION.finditer(lowered):
        value = _number(match.group(1))
        if value is None:
            continue
        unit = match.group(2)
        seconds = value * 60 if unit.startswith("m") else value
        # "a 5m tall giraffe" is a length, not a duration: metres only count next to video words.
        if unit == "m" and not _VIDEO_WORDS.search(lowered):
            continue
        clamped = int(min(max(round(seconds), MIN_DURATION), MAX_DURATION))
        if clamped != round(seconds):
            notes.append(f"Clips can run {MIN_DURATION} to {MAX_DURATION} seconds, so I set {clamped} seconds.")
        duration = clamped
        break

    negated = _NEGATED_VIDEO.sub(" ", lowered)
    wants_video = bool(_VIDEO_WORDS.search(negated)) or (duration is not None and not _STILL_WORDS.search(negated))
    if _NEGATED_VIDEO.search(lowered) and not _VIDEO_WORDS.search(negated):
        wants_video = False

    aspect: str | None = None
    ratio = _RATIO.search(lowered)
    if ratio and int(ratio.group(1)) > 0 and int(ratio.group(2)) > 0:
        width, height = int(ratio.group(1)), int(ratio.group(2))
        aspect = "16:9" if width > height else "9:16" if width < height else "1:1"
        if f"{width}:{height}" != aspect:
            notes.append(f"The closest shape I can make to {width}:{height} is {aspect}.")
    elif _VERTICAL.search(lowered):
        aspect = "9:16"
    elif _HORIZONTAL.search(lowered):
        aspect = "16:9"
    elif _SQUARE.search(lowered):
        aspect = "1:1"

    count: int | None = None
    counted = _COUNT.search(lowered)
    if counted:
        value = _number(counted.group(1))
        if value is not None and value >= 1:
            count = int(value)
    return Hints(wants_video, aspect, duration, count, tuple(notes))


def _fastest(models: list[CatalogModel]) -> CatalogModel:
    return min(models, key=lambda m: (m.latency_rank, m.cost_rank))


def _finest(models: list[CatalogModel]) -> CatalogModel:
    # Price is the catalog's stand-in for quality: the dearer model is the more capable one.
    return max(models, key=lambda m: (m.cost_rank, m.latency_rank))


def _params(model: CatalogModel, hints: Hints) -> dict[str, Any]:
    params: dict[str, Any] = dict(model.defaults)
    if hints.aspect_ratio is not None:
        params["aspectRatio"] = hints.aspect_ratio
    if model.tool_type.video:
        params.pop("numImages", None)
        if hints.duration_seconds is not None:
            params["durationSeconds"] = hints.duration_seconds
    elif hints.num_images is not None:
        params["numImages"] = hints.num_images
    return params


def _describe_params(params: dict[str, Any]) -> str:
    parts = []
    shape = {"9:16": "vertical (9:16)", "16:9": "widescreen (16:9)", "1:1": "square (1:1)"}
    if "aspectRatio" in params:
        parts.append(shape[params["aspectRatio"]])
    if "durationSeconds" in params:
        parts.append(f"{params['durationSeconds']} seconds long")
    if params.get("numImages", 1) > 1:
        parts.append(f"{params['numImages']} pictures")
    return ", ".join(parts)


_COST_WORDS = {
    "free": "costs nothing",
    "low": "is cheap",
    "medium": "costs a moderate amount",
    "high": "is expensive",
    "premium": "is the most expensive",
}
_LATENCY_WORDS = {"fast": "is ready in seconds", "medium": "takes a little while", "slow": "can take minutes"}
_ROLE_WORDS = {
    ToolType.TEXT_TO_IMAGE: "makes a picture from your words",
    ToolType.IMAGE_TO_IMAGE: "reworks the picture you attached",
    ToolType.TEXT_TO_VIDEO: "makes a video from your words",
    ToolType.IMAGE_TO_VIDEO: "turns the picture you attached into a video",
}


def _draft(model: CatalogModel, hints: Hints, why: str) -> OptionDraft:
    params = _params(model, hints)
    shape = _describe_params(params)
    label = model.title + (f" · {shape}" if shape else "")
    explanation = (
        f"{model.title} ({why}) {_ROLE_WORDS[model.tool_type]}: {model.description} "
        f"It {_COST_WORDS[model.cost_tier]} and {_LATENCY_WORDS[model.latency_tier]}."
        + (f" Settings: {shape}." if shape else "")
    )
    return OptionDraft(model, label, explanation, params)


def recommend(text: str, has_attachments: bool, catalog: Catalog) -> Recommendation:
    """Two to four options from the catalog for this message (fewer only if the catalog has fewer)."""
    hints = read_hints(text)
    if has_attachments and hints.wants_video:
        intro = "You want your picture to move, so here are ways to animate it."
        order = [ToolType.IMAGE_TO_VIDEO, ToolType.IMAGE_TO_IMAGE, ToolType.TEXT_TO_VIDEO]
    elif has_attachments:
        intro = "You attached a picture: I can rework it, or bring it to life."
        order = [ToolType.IMAGE_TO_IMAGE, ToolType.IMAGE_TO_VIDEO, ToolType.TEXT_TO_IMAGE]
    elif hints.wants_video:
        intro = "You asked for something that moves, so here are video options."
        order = [ToolType.TEXT_TO_VIDEO, ToolType.TEXT_TO_IMAGE]
    else:
        intro = "Here are a fast and a high-quality way to make that picture."
        order = [ToolType.TEXT_TO_IMAGE, ToolType.TEXT_TO_VIDEO]
    # An intent beyond a plain picture also offers one alternative of the next fitting kind.
    wanted = 2 if order[0] == ToolType.TEXT_TO_IMAGE else 3

    notes = list(hints.notes)
    groups = [(tool_type, catalog.of_type(tool_type)) for tool_type in order]
    available = [(tool_type, models) for tool_type, models in groups if models]
    if groups[0][1] == [] and available:
        intro = {
            ToolType.TEXT_TO_VIDEO: "No video model is enabled on this server",
            ToolType.IMAGE_TO_VIDEO: "No model here can animate a picture",
            ToolType.IMAGE_TO_IMAGE: "No model here can rework a picture",
            ToolType.TEXT_TO_IMAGE: "No picture model is enabled on this server",
        }[groups[0][0]] + ", so these are the closest options."

    drafts: list[OptionDraft] = []
    seen: set[str] = set()

    def add(model: CatalogModel, why: str) -> None:
        if model.key not in seen and len(drafts) < MAX_OPTIONS:
            seen.add(model.key)
            drafts.append(_draft(model, hints, why))

    if available:
        _, first = available[0]
        add(_fastest(first), "fastest")
        add(_finest(first), "best quality")
        for _, models in available[1:]:
            if len(drafts) >= wanted:
                break
            add(_fastest(models), "an alternative")
    if not drafts:
        intro = "No generation model is enabled on this server, so I cannot offer anything yet."
    return Recommendation(" ".join([intro, *notes]), drafts)
