"""OutputPolicy: validation naming the field, canonical JSON, defaults, presets, pre-flight."""

from __future__ import annotations

from typing import Any

import pytest

from imgcompress_core import InvalidPolicy, OutputPolicy, Settings
from imgcompress_core.options import default_policy
from imgcompress_core.policy import PRESETS, parse_policy, preflight


def test_the_default_policy_is_empty_and_stores_as_nothing() -> None:
    assert OutputPolicy().to_json() == ""
    assert OutputPolicy.from_json("") == OutputPolicy()


def test_json_is_canonical_and_round_trips() -> None:
    policy = OutputPolicy(max_width=800, format="webp", quality=70, background="#FFFFFF")
    text = policy.to_json()
    assert text == '{"background":"#ffffff","format":"webp","max_width":800,"quality":70}'
    assert OutputPolicy.from_json(text) == policy


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"format": "gif"}, "format"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"quality": True}, "quality"),
        ({"target_quality": 29}, "target_quality"),
        ({"target_quality": 96}, "target_quality"),
        ({"quality": 50, "target_quality": 70}, "target_quality"),
        ({"max_bytes": 10}, "max_bytes"),
        ({"max_width": 0}, "max_width"),
        ({"max_height": -5}, "max_height"),
        ({"background": "white"}, "background"),
        ({"background": "#fff"}, "background"),
        ({"metadata": "all"}, "metadata"),
        ({"preset": "ebay"}, "preset"),
        ({"format": "jpeg", "background": "keep"}, "background"),
        ({"preset": "google-merchant", "format": "avif"}, "format"),
        ({"preset": "amazon-main", "format": "webp"}, "format"),
        ({"preset": "amazon-main", "background": "keep"}, "background"),
        ({"preset": "amazon-main", "background": "#000000"}, "background"),
        ({"preset": "shopify", "max_bytes": 30_000_000}, "max_bytes"),
        ({"preset": "shopify", "max_width": 6000}, "max_width"),
    ],
)
def test_bad_options_name_their_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        OutputPolicy(**values)
    assert caught.value.field == field
    assert caught.value.code == "invalid_policy"
    assert str(caught.value).startswith(f"{field}: ")


def test_parse_policy_reads_text_fields_and_names_bad_ones() -> None:
    policy = parse_policy(
        {"format": " WebP ", "quality": "70", "max_width": "1200", "background": "", "preset": None}
    )
    assert policy == OutputPolicy(format="webp", quality=70, max_width=1200)
    assert parse_policy({"target_quality": "72.5"}).target_quality == 72.5
    with pytest.raises(InvalidPolicy, match=r"^quality: must be a whole number") as caught:
        parse_policy({"quality": "high"})
    assert caught.value.field == "quality"
    with pytest.raises(InvalidPolicy) as unknown:
        parse_policy({"colour": "red"})
    assert unknown.value.field == "colour"


def test_a_request_overrides_the_defaults_field_by_field() -> None:
    defaults = OutputPolicy(format="webp", quality=60, max_width=2000)
    mine = OutputPolicy(max_width=800, target_quality=75)
    merged = mine.over(defaults)
    # A target replaces the default quality: the two are one choice.
    assert merged == OutputPolicy(format="webp", target_quality=75, max_width=800)
    assert OutputPolicy().over(defaults) == defaults


def test_a_request_preset_is_not_spoilt_by_the_defaults() -> None:
    defaults = OutputPolicy(format="webp", max_width=2000, metadata="copyright")
    merged = OutputPolicy(preset="amazon-main").over(defaults)
    assert merged.effective().format == "jpeg"  # amazon-main's, not the service's webp
    assert merged.effective().max_width == 10000
    assert merged.metadata == "copyright"  # a field the preset does not fill comes through
    same = OutputPolicy().over(OutputPolicy(preset="web", max_width=1000))
    assert same.effective().max_width == 1000


def test_settings_give_the_service_defaults() -> None:
    settings = Settings(output_format="avif", max_output_width=640, output_metadata="copyright")
    assert default_policy(settings) == OutputPolicy(
        format="avif", max_width=640, metadata="copyright"
    )
    assert default_policy(Settings()) == OutputPolicy()
    with pytest.raises(InvalidPolicy) as caught:
        default_policy(Settings(output_format="jpeg", output_background="keep"))
    assert caught.value.field == "background"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_fill_in_only_what_is_not_given(name: str) -> None:
    preset = PRESETS[name]
    effective = OutputPolicy(preset=name).effective()
    for field, value in preset.fills.items():
        assert getattr(effective, field) == value
    assert effective.preset == name
    mine = OutputPolicy(preset=name, max_width=500).effective()
    assert mine.max_width == 500


def test_amazon_main_flattens_on_white_as_jpeg_within_its_limits() -> None:
    amazon = OutputPolicy(preset="amazon-main").effective()
    assert (amazon.format, amazon.background, amazon.max_bytes) == ("jpeg", "#ffffff", 10**7)


def test_preflight_warns_about_what_the_policy_cannot_fix() -> None:
    amazon = OutputPolicy(preset="amazon-main")
    ok = preflight(
        amazon, width=1500, height=1500, output_format="jpeg", output_bytes=1, white_border=1
    )
    assert ok == ()
    small_grey = preflight(
        amazon, width=600, height=400, output_format="jpeg", output_bytes=1, white_border=0.2
    )
    assert len(small_grey) == 2
    assert "1000 px" in small_grey[0]
    assert "not pure white" in small_grey[1]
    google = preflight(
        OutputPolicy(preset="google-merchant"),
        width=90,
        height=90,
        output_format="avif",
        output_bytes=1,
        white_border=None,
    )
    assert any("100x100" in w for w in google)
    assert any("does not accept avif" in w for w in google)
    assert (
        preflight(
            OutputPolicy(), width=1, height=1, output_format="jpeg", output_bytes=1, white_border=0
        )
        == ()
    )
