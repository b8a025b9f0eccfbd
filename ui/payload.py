"""What the JSON API reads from a request and how it writes images: the checks every route
shares, so that a malformed body gets the same clear 422 everywhere."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
from flask import current_app, request

from appliance.exceptions import InvalidInput
from appliance.review.case_images import png_bytes
from appliance.services import Appliance

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what SQLite stores


def appliance() -> Appliance:
    """The parts this web process was built with (``appliance.services.build``)."""
    return current_app.extensions["aomas"]


def body() -> dict[str, Any]:
    value = request.get_json(silent=True)
    if not isinstance(value, dict):
        raise InvalidInput("send a JSON object with Content-Type: application/json")
    return value


def field(body: dict, name: str, kind: type, *, required: bool = True, default=None):
    if name not in body:
        if required:
            raise InvalidInput(f"'{name}' is missing")
        return default
    value = body[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)
                        or not INT64_MIN <= value <= INT64_MAX):
        raise InvalidInput(f"'{name}' must be an integer (64-bit)")
    if kind in (str, list) and not isinstance(value, kind):
        raise InvalidInput(f"'{name}' must be a {'string' if kind is str else 'list'}")
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # JSON can carry lone surrogates; the database cannot
            raise InvalidInput(f"'{name}' is not valid Unicode text") from None
    return value


def query_number(name: str, kind: type, default):
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise InvalidInput(f"query parameter '{name}' must be a number") from None
    if not (INT64_MIN <= value <= INT64_MAX if kind is int else math.isfinite(value)):
        raise InvalidInput(f"query parameter '{name}' is out of range")
    return value


def png(values: np.ndarray) -> str:
    """A 0..1 array as a base64 8-bit grey PNG."""
    pixels = (np.clip(np.nan_to_num(values), 0, 1) * 255).round().astype(np.uint8)
    # Fastest compression: on every tile fetch, and tiles are small anyway.
    return base64.b64encode(png_bytes(pixels, compress_level=1)).decode()


def png_field(body: dict, name: str = "mask_png") -> bytes:
    """A base64 PNG field's bytes (decoded, not yet checked as an image)."""
    try:
        return base64.b64decode(field(body, name, str), validate=True)
    except ValueError:  # binascii.Error, or characters outside ASCII
        raise InvalidInput(f"{name} must be base64 (a PNG file's bytes)") from None
