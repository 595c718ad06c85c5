"""Content negotiation of WADO-RS (PS3.18 8.7): the Accept header (or accept query parameter) read as preferences.

Only reading the request happens here. Which preference an instance can satisfy is decided by the retrieve service
from what it stores (images/retrieve.py); a request no preference of which can be satisfied is 406.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian

from ..frames import FRAME_MEDIA_TYPES, OCTET_STREAM
from ..transcode import AS_STORED, PixelDescription, decodable
from .multipart import parse_media_type

DICOM = "application/dicom"
MULTIPART = "multipart/related"
# Older names still sent by some clients (PS3.18 Table 8.7.3-5 notes them as registered aliases).
MEDIA_TYPE_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


@dataclass(frozen=True)
class MediaRange:
    media_type: str
    params: dict[str, str]
    q: float
    position: int


@dataclass(frozen=True)
class DicomPreference:
    """An acceptable answer for a DICOM resource: instances in `transfer_syntax` (a UID or "*"), multipart or a single part."""

    transfer_syntax: str
    multipart: bool = True


@dataclass(frozen=True)
class PixelPreference:
    """An acceptable answer for frames or bulk data: `media_type` is application/octet-stream (uncompressed), a compressed
    image media type, or "image/*"; `transfer_syntax` a UID, "*" (as stored) or "" (the media type's default)."""

    media_type: str
    transfer_syntax: str = ""


def requested(request) -> str:
    """The accept query parameter wins over the Accept header (PS3.18 8.3.3.1)."""
    return request.GET.get("accept") or request.headers.get("Accept", "")


def media_ranges(value: str) -> list[MediaRange]:
    """The media ranges of an Accept value, most preferred first (RFC 9110 12.5.1); q=0 and malformed ranges left out."""
    ranges = []
    for position, item in enumerate(_split_outside_quotes(value)):
        media_type, params = parse_media_type(item)
        if "/" not in media_type:
            continue
        params = {name.lower(): value.strip() for name, value in params.items()}
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            continue
        if 0 < q <= 1:
            ranges.append(MediaRange(MEDIA_TYPE_ALIASES.get(media_type, media_type), params, q, position))
    return sorted(ranges, key=lambda r: (-r.q, r.position))


def _split_outside_quotes(value: str) -> list[str]:
    items, current, quoted = [], [], False
    for char in value or "":
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def _inner_type(params: dict[str, str], default: str) -> str:
    inner, _ = parse_media_type(params.get("type") or default)
    return MEDIA_TYPE_ALIASES.get(inner, inner)


def dicom_preferences(value: str, *, single_part: bool = False) -> list[DicomPreference]:
    """Preferences for a study, series or instance (PS3.18 Table 8.7.3-2): multipart/related; type="application/dicom"
    with an optional transfer-syntax, "*" for the bytes as stored; no transfer-syntax means Explicit VR Little Endian
    (PS3.18 8.7.3.4). A bare application/dicom (one part) is taken for a single instance only."""
    if not (value or "").strip():
        return [DicomPreference(ExplicitVRLittleEndian)]
    preferences = []
    for media in media_ranges(value):
        syntax = media.params.get("transfer-syntax") or ExplicitVRLittleEndian
        if media.media_type == MULTIPART and _inner_type(media.params, DICOM) in (DICOM, "application/*", "*/*"):
            preferences.append(DicomPreference(syntax))
        elif media.media_type in ("*/*", "multipart/*"):
            preferences.append(DicomPreference(ExplicitVRLittleEndian))
        elif media.media_type == DICOM and single_part:
            preferences.append(DicomPreference(syntax, multipart=False))
    return preferences


def pixel_preferences(value: str) -> list[PixelPreference]:
    """Preferences for frames and bulk data (PS3.18 Tables 8.7.3-4 and 8.7.3-5).

    application/octet-stream is uncompressed little endian; with transfer-syntax=* it is the stored frames whatever
    their media type, as OHIF asks. An image media type takes the stored frames of that type. A wildcard type gets
    uncompressed frames, the default of bulk data.
    """
    if not (value or "").strip():
        return [PixelPreference(OCTET_STREAM, ExplicitVRLittleEndian)]
    preferences = []
    for media in media_ranges(value):
        syntax = media.params.get("transfer-syntax", "")
        if media.media_type == MULTIPART:
            inner = _inner_type(media.params, "*/*")
        elif media.media_type in ("*/*", "multipart/*"):
            inner = "*/*"
        else:
            continue  # single-part answers are not offered for frames and bulk data
        if inner == OCTET_STREAM or inner in ("*/*", "application/*"):
            if syntax == AS_STORED:
                preferences.append(PixelPreference("*/*", AS_STORED))
            elif syntax in ("", ExplicitVRLittleEndian):
                preferences.append(PixelPreference(OCTET_STREAM, ExplicitVRLittleEndian))
        elif inner == "image/*" or inner in FRAME_MEDIA_TYPES.values():
            preferences.append(PixelPreference(inner, syntax))
    return preferences


@dataclass(frozen=True)
class PixelAnswer:
    """How frames will be sent: the stored compressed frames as they are, or uncompressed; the parts' media type and syntax."""

    as_stored: bool
    media_type: str
    transfer_syntax: str


def pixel_answer(preferences: list[PixelPreference], description: PixelDescription) -> PixelAnswer | None:
    """The first preference the stored pixel data can satisfy; None when none can (406)."""
    stored = description.transfer_syntax_uid
    stored_type = FRAME_MEDIA_TYPES.get(stored) if description.compressed else None
    uncompressed = PixelAnswer(False, OCTET_STREAM, ExplicitVRLittleEndian)
    for preference in preferences:
        if preference.media_type == OCTET_STREAM:
            if not description.compressed or decodable(stored):
                return uncompressed
        elif preference.transfer_syntax == AS_STORED and preference.media_type == "*/*":
            if not description.compressed:
                return uncompressed  # uncompressed frames are sent as what they are: little endian octets
            if stored_type:
                return PixelAnswer(True, stored_type, stored)
        elif stored_type and preference.media_type in ("image/*", stored_type) and preference.transfer_syntax in ("", AS_STORED, stored):
            return PixelAnswer(True, stored_type, stored)
    return None


def describe_dicom() -> str:
    return 'multipart/related; type="application/dicom" with transfer-syntax=* (as stored) or one of the syntaxes listed'


def describe_pixels() -> str:
    return (
        'multipart/related; type="application/octet-stream" (uncompressed), with transfer-syntax=* for the stored frames, '
        "or the media type of the stored frames (image/jpeg, image/jls, image/jp2, image/jpx, image/dicom-rle, image/jphc)"
    )
