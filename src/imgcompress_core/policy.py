"""What a request asks of its images: format, quality, size caps, background, metadata.

:class:`OutputPolicy` is one request's choice; every field is optional, and a field left
unset means "the service's default" (itself today's behaviour unless the settings change
it). It is frozen and validated when built: a bad value raises :class:`InvalidPolicy`
naming the field, which the HTTP API answers with a 400. Its canonical JSON
(:meth:`OutputPolicy.to_json`, ``""`` for the defaults) is what a request stores.

A ``preset`` fills in the fields it cares about (an explicit field wins unless the store
forbids it) and turns on a pre-flight check of the store's image rules
(:func:`preflight`): what the policy cannot fix (an image too small, a background that
is not white) becomes a per-image warning.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidPolicy

__all__ = [
    "FORMATS",
    "POLICY_FIELDS",
    "PRESETS",
    "OutputPolicy",
    "Preset",
    "parse_policy",
    "preflight",
]

FORMATS = ("jpeg", "webp", "avif", "auto", "original")
METADATA = ("strip", "copyright")
MB = 1_000_000
_COLOUR = re.compile(r"#[0-9a-f]{6}")
_MAX_SIDE = 100_000  # max_width / max_height: larger is no cap at all


@dataclass(frozen=True, slots=True)
class Preset:
    """A store's image rules, and the policy fields a preset fills in for them."""

    name: str
    formats: frozenset[str]  # output formats the store accepts (jpeg, webp, avif, png, gif)
    fills: Mapping[str, Any]  # OutputPolicy fields set unless the request sets them
    max_bytes: int | None = None  # the store's file-size limit
    max_side: int | None = None  # the store's largest width or height
    min_side: int = 0  # smaller width or height: a warning
    min_long_side: int = 0  # a shorter long side: a warning
    min_reason: str = ""
    white_background: bool = False  # a border that is not pure white: a warning
    heavy_bytes: int | None = None  # larger output: a warning (not a store's hard limit)


PRESETS: Mapping[str, Preset] = {
    "web": Preset(
        "web",
        frozenset({"jpeg", "webp", "avif", "png", "gif"}),
        {"format": "webp", "max_width": 2560, "max_height": 2560, "metadata": "strip"},
        heavy_bytes=1 * MB,
    ),
    "shopify": Preset(
        "shopify",
        frozenset({"jpeg", "webp", "png", "gif"}),
        {"max_width": 5000, "max_height": 5000, "max_bytes": 20 * MB},
        max_bytes=20 * MB,
        max_side=5000,
        min_side=800,
        min_reason="Shopify shows product zoom only for images of at least 800x800",
    ),
    "google-merchant": Preset(
        "google-merchant",
        frozenset({"jpeg", "webp", "png", "gif"}),
        {"max_bytes": 16 * MB},
        max_bytes=16 * MB,
        min_side=100,
        min_reason="Google Merchant Center rejects images smaller than 100x100 "
        "(250x250 for apparel)",
    ),
    "amazon-main": Preset(
        "amazon-main",
        frozenset({"jpeg", "png", "gif"}),
        {
            "format": "jpeg",
            "background": "#ffffff",
            "max_width": 10000,
            "max_height": 10000,
            "max_bytes": 10 * MB,
        },
        max_bytes=10 * MB,
        max_side=10000,
        min_long_side=1000,
        min_reason="Amazon wants at least 1000 px on the long side of a main image (zoom)",
        white_background=True,
    ),
}


def _int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidPolicy(name, f"must be a whole number from {low} to {high}, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class OutputPolicy:
    """One request's output policy; None everywhere means the service's defaults.

    - ``format``: ``jpeg``, ``webp``, ``avif``, ``auto`` (the smallest of the allowed
      formats) or ``original`` (the input's family); None: JPEG, or WebP when the image
      has transparency to keep.
    - ``quality``: the encoder's quality, 1-100 (default 50), or
    - ``target_quality``: a SSIMULACRA2 score (30-95) each image reaches with the smallest
      output (needs ``imgcompress[target]``); not both.
    - ``max_bytes``: the largest output; the quality is lowered to fit, never the size.
    - ``max_width``, ``max_height``: shrink to fit (never enlarge), after EXIF orientation.
    - ``background``: ``keep`` (transparency kept) or ``#rrggbb`` (flattened onto it).
    - ``metadata``: ``strip`` (all but the ICC profile) or ``copyright`` (also keep
      copyright, artist, IPTC rights and digital-source-type; GPS always goes).
    - ``preset``: ``web``, ``shopify``, ``google-merchant`` or ``amazon-main``.
    """

    format: str | None = None
    quality: int | None = None
    target_quality: float | None = None
    max_bytes: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    background: str | None = None
    metadata: str | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("format", FORMATS), ("metadata", METADATA), ("preset", PRESETS)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                choices = ", ".join(allowed)
                raise InvalidPolicy(name, f"must be one of {choices}, not {value!r}")
        self._check_numbers()
        if self.background is not None:
            background = self.background.strip().lower()
            if background != "keep" and not _COLOUR.fullmatch(background):
                raise InvalidPolicy(
                    "background", f"must be keep or a colour like #ffffff, not {self.background!r}"
                )
            object.__setattr__(self, "background", background)
        self._check_combination()

    def _check_numbers(self) -> None:
        """Refuse numbers out of range, and a quality given with a target."""
        if self.quality is not None:
            _int("quality", self.quality, 1, 100)
        if self.target_quality is not None:
            target = self.target_quality
            if isinstance(target, bool) or not isinstance(target, int | float):
                raise InvalidPolicy("target_quality", f"must be a number, not {target!r}")
            if not 30 <= target <= 95:
                raise InvalidPolicy("target_quality", f"must be from 30 to 95, not {target!r}")
            object.__setattr__(self, "target_quality", float(target))
            if self.quality is not None:
                raise InvalidPolicy("target_quality", "give quality or target_quality, not both")
        if self.max_bytes is not None:
            _int("max_bytes", self.max_bytes, 1024, 1 << 40)
        for name in ("max_width", "max_height"):
            if getattr(self, name) is not None:
                _int(name, getattr(self, name), 1, _MAX_SIDE)

    def _check_combination(self) -> None:
        """Refuse fields that contradict each other or the preset's store rules."""
        effective = self.effective()
        if effective.format == "jpeg" and effective.background == "keep":
            raise InvalidPolicy(
                "background",
                "JPEG has no transparency: give a colour such as #ffffff, or "
                "format webp, avif or original",
            )
        preset = PRESETS.get(self.preset or "")
        if preset is None:
            return
        fmt = effective.format
        if fmt in ("jpeg", "webp", "avif") and fmt not in preset.formats:
            raise InvalidPolicy("format", f"the {preset.name} preset does not accept {fmt}")
        if preset.max_bytes and effective.max_bytes and effective.max_bytes > preset.max_bytes:
            raise InvalidPolicy(
                "max_bytes", f"the {preset.name} preset allows at most {preset.max_bytes} bytes"
            )
        for name in ("max_width", "max_height"):
            side = getattr(effective, name)
            if preset.max_side and side and side > preset.max_side:
                raise InvalidPolicy(
                    name, f"the {preset.name} preset allows at most {preset.max_side} pixels"
                )
        if preset.white_background and effective.background != "#ffffff":
            raise InvalidPolicy(
                "background", f"the {preset.name} preset needs a pure white background, #ffffff"
            )

    def effective(self) -> OutputPolicy:
        """Return this policy with its preset's fields filled in (where not set)."""
        preset = PRESETS.get(self.preset or "")
        if preset is None:
            return self
        filled = {k: v for k, v in preset.fills.items() if getattr(self, k) is None}
        if not filled:
            return self
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(filled)
        values["preset"] = None  # already applied; avoids checking the rules twice
        return dataclasses.replace(OutputPolicy(**values), preset=self.preset)

    def over(self, defaults: OutputPolicy) -> OutputPolicy:
        """Return this policy with ``defaults`` filling the fields it leaves unset.

        ``quality`` and ``target_quality`` count as one choice: a request that gives
        either one takes neither from the defaults. A request's own preset fills its
        fields before the defaults do (the defaults may not suit that store).
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        own = PRESETS.get(self.preset or "") if self.preset != defaults.preset else None
        for name, value in values.items():
            if value is None and (own is None or name not in own.fills):
                values[name] = getattr(defaults, name)
        if self.quality is not None or self.target_quality is not None:
            values["quality"], values["target_quality"] = self.quality, self.target_quality
        return OutputPolicy(**values)

    def fields_set(self) -> dict[str, Any]:
        """Return the fields given (not None), by name."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    def to_json(self) -> str:
        """Return the canonical JSON of the fields given; ``""`` when none is."""
        given = self.fields_set()
        return json.dumps(given, sort_keys=True, separators=(",", ":")) if given else ""

    @classmethod
    def from_json(cls, text: str) -> OutputPolicy:
        """Return the policy ``to_json`` wrote (``""``: the defaults)."""
        if not text:
            return cls()
        values = json.loads(text)
        if not isinstance(values, dict):
            raise InvalidPolicy("policy", "must be a JSON object")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InvalidPolicy(unknown[0], "is not an output policy field")
        return cls(**values)


POLICY_FIELDS = (
    "format",
    "quality",
    "target_quality",
    "max_bytes",
    "max_width",
    "max_height",
    "background",
    "metadata",
    "preset",
)  # the fields of OutputPolicy, as form fields and flags
_NUMBERS = {"quality": int, "max_bytes": int, "max_width": int, "max_height": int}


def parse_policy(fields: Mapping[str, str | None]) -> OutputPolicy:
    """Build a policy from text fields (a form, CLI flags); empty or missing ones are unset.

    Raises InvalidPolicy naming the field for anything that is not a valid value.
    """
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(OutputPolicy)}
    for name, raw in fields.items():
        if name not in names:
            raise InvalidPolicy(name, "is not an output policy field")
        text = (raw or "").strip()
        if not text:
            continue
        if name in _NUMBERS or name == "target_quality":
            try:
                values[name] = int(text) if name in _NUMBERS else float(text)
            except ValueError:
                kind = "a whole number" if name in _NUMBERS else "a number"
                raise InvalidPolicy(name, f"must be {kind}, not {text!r}") from None
        else:
            values[name] = text.lower()
    return OutputPolicy(**values)


def preflight(
    policy: OutputPolicy,
    *,
    width: int,
    height: int,
    output_format: str,
    output_bytes: int,
    white_border: float | None,
) -> tuple[str, ...]:
    """Return the warnings of ``policy``'s preset about one output (none without a preset).

    ``white_border`` is the share of the border's pixels that are pure white (None when
    the preset does not ask).
    """
    preset = PRESETS.get(policy.preset or "")
    if preset is None:
        return ()
    name, warnings = preset.name, []
    if preset.min_side and min(width, height) < preset.min_side:
        warnings.append(f"{name}: {width}x{height} is too small: {preset.min_reason}")
    if preset.min_long_side and max(width, height) < preset.min_long_side:
        warnings.append(f"{name}: {width}x{height} is too small: {preset.min_reason}")
    if output_format not in preset.formats:
        warnings.append(f"{name}: the store does not accept {output_format} images")
    if preset.max_bytes and output_bytes > preset.max_bytes:  # a kept original, for one
        warnings.append(f"{name}: {output_bytes} bytes is over the {preset.max_bytes}-byte limit")
    if preset.heavy_bytes and output_bytes > preset.heavy_bytes:
        warnings.append(
            f"{name}: {output_bytes} bytes is heavy for a web page (over {preset.heavy_bytes})"
        )
    if preset.white_background and white_border is not None and white_border < 0.95:
        warnings.append(
            f"{name}: the background is not pure white (only {white_border:.0%} of the "
            "border is #ffffff); Amazon requires RGB 255,255,255 on main images"
        )
    return tuple(warnings)
