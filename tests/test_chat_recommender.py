"""The recommender's rules, as a table: phrasings -> tool types, and hints -> option params."""

from __future__ import annotations

import pytest

from backend.chat.catalog import BUILT_IN_CATALOG, Catalog, CatalogModel, ToolType, read_catalog_file
from backend.chat.recommender import read_hints, recommend

T2I, I2I, T2V, I2V = ToolType.TEXT_TO_IMAGE, ToolType.IMAGE_TO_IMAGE, ToolType.TEXT_TO_VIDEO, ToolType.IMAGE_TO_VIDEO


def model(key: str, tool_type: ToolType, cost: str, latency: str) -> CatalogModel:
    return CatalogModel.model_validate(
        {
            "key": key,
            "toolType": tool_type,
            "provider": "p",
            "model": key,
            "title": key.title(),
            "description": f"the {key} model",
            "costTier": cost,
            "latencyTier": latency,
        }
    )


# Every tool type, each with a fast-and-cheap and a slow-and-dear model.
FULL = Catalog(
    [
        model("img-fast", T2I, "free", "fast"),
        model("img-best", T2I, "high", "slow"),
        model("edit-fast", I2I, "low", "fast"),
        model("edit-best", I2I, "high", "medium"),
        model("vid-fast", T2V, "low", "medium"),
        model("vid-best", T2V, "premium", "slow"),
        model("anim-fast", I2V, "low", "medium"),
        model("anim-best", I2V, "high", "slow"),
    ]
)


@pytest.mark.parametrize(
    ("text", "attached", "first_type"),
    [
        # Plain requests: pictures.
        ("a cute bear", False, T2I),
        ("a photo of a red car at night", False, T2I),
        ("a logo for my bakery", False, T2I),
        ("a still image of a running horse", False, T2I),
        ("a 5m tall giraffe in a meadow", False, T2I),
        # Several ways of asking for motion.
        ("make a video of a cat", False, T2V),
        ("Animate a dragon flying over the sea", False, T2V),
        ("an animation of falling leaves", False, T2V),
        ("a short clip of waves crashing", False, T2V),
        ("a gif of a dancing cat", False, T2V),
        ("timelapse of a city at dusk", False, T2V),
        ("slow motion water splash", False, T2V),
        ("a movie trailer about my dog", False, T2V),
        ("a moving picture of a steam train", False, T2V),
        ("make it move: a paper boat on a river", False, T2V),
        ("a fox in the snow, 10 seconds long", False, T2V),
        ("a 6s loop of rain", False, T2V),
        ("footage of a rocket launch", False, T2V),
        # Negations keep it a picture.
        ("a watercolor of mountains, no video please", False, T2I),
        ("not an animation, just a picture of a fox", False, T2I),
        ("a lighthouse, without motion", False, T2I),
        ("I don't want a video, a poster of a robot", False, T2I),
        # Attachments: work from the picture.
        ("make it look like winter", True, I2I),
        ("turn this into a watercolor", True, I2I),
        ("animate this", True, I2V),
        ("bring my grandmother's photo to life", True, I2V),
        ("make a 5 second video from my drawing", True, I2V),
    ],
)
def test_phrasing_picks_the_tool_type(text: str, attached: bool, first_type: ToolType) -> None:
    result = recommend(text, attached, FULL)
    assert 2 <= len(result.options) <= 4
    assert result.options[0].model.tool_type == first_type
    # A fast and a high-quality model of the fitting type lead the list.
    assert result.options[1].model.tool_type == first_type
    assert result.options[0].model.latency_rank <= result.options[1].model.latency_rank
    assert result.options[0].model.cost_rank < result.options[1].model.cost_rank
    assert len({option.model.key for option in result.options}) == len(result.options)


def test_plain_request_gets_exactly_a_fast_and_a_high_quality_image() -> None:
    result = recommend("a cute bear", False, FULL)
    assert [option.model.key for option in result.options] == ["img-fast", "img-best"]
    assert "fast" in result.intro and "high-quality" in result.intro


def test_video_and_attachment_requests_offer_an_alternative_kind() -> None:
    video = recommend("a video of the sea", False, FULL)
    assert [option.model.key for option in video.options] == ["vid-fast", "vid-best", "img-fast"]
    attached = recommend("make it look like winter", True, FULL)
    assert [option.model.key for option in attached.options] == ["edit-fast", "edit-best", "anim-fast"]


@pytest.mark.parametrize(
    ("text", "aspect", "duration", "count"),
    [
        ("a vertical video of a fox", "9:16", None, None),
        ("portrait of a knight", "9:16", None, None),
        ("for my tiktok: a dancing robot", "9:16", None, None),
        ("a 16:9 shot of a beach", "16:9", None, None),
        ("a widescreen desert panorama", "16:9", None, None),
        ("landscape photo of hills", "16:9", None, None),
        ("a square avatar of a cat", "1:1", None, None),
        ("a 1:1 icon", "1:1", None, None),
        ("a 9x16 poster", "9:16", None, None),
        ("a 10 seconds video", None, 10, None),
        ("a 10s clip", None, 10, None),
        ("a 10-second clip", None, 10, None),
        ("ten seconds of fireworks", None, 10, None),
        ("a 2 sec video", None, 2, None),
        ("three pictures of a teapot", None, None, 3),
        ("4 variations of a logo", None, None, 4),
        ("a cat", None, None, None),
    ],
)
def test_hints_are_read(text: str, aspect: str | None, duration: int | None, count: int | None) -> None:
    hints = read_hints(text)
    assert (hints.aspect_ratio, hints.duration_seconds, hints.num_images) == (aspect, duration, count)


@pytest.mark.parametrize(
    ("text", "duration", "aspect"),
    [
        ("a 30 second video", 20, None),
        ("half a minute of rain", 20, None),
        ("a one minute film", 20, None),
        ("a 4:3 photo", None, "16:9"),
    ],
)
def test_out_of_range_hints_are_adjusted_and_explained(text: str, duration: int | None, aspect: str | None) -> None:
    hints = read_hints(text)
    assert hints.duration_seconds == duration and hints.aspect_ratio == aspect
    assert hints.notes and recommend(text, False, FULL).intro.endswith(hints.notes[-1])


def test_hints_travel_into_params_of_fitting_options_only() -> None:
    result = recommend("a vertical video of a fox, 10 seconds", False, FULL)
    video, image = result.options[0], result.options[2]
    assert video.params == {"aspectRatio": "9:16", "durationSeconds": 10}
    assert image.model.tool_type == T2I and image.params == {"aspectRatio": "9:16"}
    assert "vertical (9:16)" in video.label and "10 seconds" in video.label
    assert "10 seconds long" in video.explanation


def test_each_option_is_explained_in_plain_words() -> None:
    for option in recommend("a video of a horse", False, FULL).options:
        assert option.model.title in option.explanation
        assert option.model.description in option.explanation
        assert any(word in option.explanation for word in ("costs", "cheap", "expensive"))


def test_missing_tool_type_falls_back_and_says_so() -> None:
    images_only = Catalog(FULL.of_type(T2I))
    result = recommend("a video of the sea", False, images_only)
    assert [option.model.tool_type for option in result.options] == [T2I, T2I]
    assert "No video model" in result.intro


def test_single_model_catalog_and_empty_catalog() -> None:
    single = recommend("a cat", False, Catalog([model("only", T2I, "free", "fast")]))
    assert [option.model.key for option in single.options] == ["only"]
    empty = recommend("a cat", False, Catalog([]))
    assert empty.options == [] and "cannot offer" in empty.intro


def test_same_input_same_answer() -> None:
    first = recommend("a vertical clip of a cat, 8 seconds", False, FULL)
    again = recommend("a vertical clip of a cat, 8 seconds", False, FULL)
    assert first == again


def test_built_in_catalog_is_valid_and_keys_are_unique() -> None:
    models = read_catalog_file(BUILT_IN_CATALOG, "built-in")
    assert len({m.key for m in models}) == len(models)
    assert {m.tool_type for m in models} == set(ToolType)
