"""What makes a received value, or an object we built, fit to rely on and to pass on.

A broken scanner (or an attacker) can send UIDs like ``../../x``, with NUL bytes, 10 000
characters long; whatever the appliance accepts it copies into its outputs (references to the
source, the study and series), so a PACS would receive objects that fail validation. The SCP
and the upload refuse such input with ``uid_problem``; before an output goes to the outbox,
``object_problems`` reads it back and checks every UID in it. Text the appliance writes itself
goes through ``fitted``: a value longer than its VR allows is a bug to fix, not one to hide by
cutting it (a model version without its last digits says another model).
"""

from __future__ import annotations

import io
import re

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.valuerep import MAX_VALUE_LEN

MAX_UID_CHARS = 64
# PS3.5 Table 6.2-1; pydicom lists the variable-length VRs only, so add DA and DT.
MAX_CHARS = {**MAX_VALUE_LEN, "DA": 8, "DT": 26}
# PS3.5 9.1: digits and dots, components without leading zeros (a lone 0 is fine).
UID_SYNTAX = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
IMAGE_LATERALITIES = ("R", "L", "U", "B")


def uid_problem(value: object) -> str | None:
    """Why ``value`` is not a valid UID, without repeating it (it may carry anything); None
    if it is one."""
    if value is not None and not isinstance(value, str):
        # A damaged VR can make it a sequence or a number; printing those decodes them.
        return f"is not text (a {type(value).__name__})"
    text = value or ""
    if not text:
        return "is empty"
    if len(text) > MAX_UID_CHARS:
        return f"is {len(text)} characters long (at most {MAX_UID_CHARS})"
    if not UID_SYNTAX.fullmatch(text):
        return "is not digits and dots (PS3.5 9.1: no leading zeros, no other characters)"
    return None


def plain_text(value: object, vr: str) -> str | None:
    """A received text value fit to show and to search by, stripped; None if it is absent,
    not text, longer than ``vr`` allows, or holds control characters (a hostile peer's)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_CHARS[vr] or not text.isprintable():
        return None
    return text


def fitted(value: str, vr: str, what: str) -> str:
    """``value`` unchanged if it fits the longest value of ``vr`` (PS3.5 6.2); else ValueError
    naming ``what``."""
    limit = MAX_CHARS[vr]
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters long, more than the {limit} of a "
                         f"DICOM {vr} value: shorten it where it is made")
    return value


def object_problems(encoded: bytes) -> list[str]:
    """What is wrong with an encoded Part-10 object: unreadable, or a UID or image laterality
    that a validator would refuse. Empty when it reads back cleanly."""
    try:
        dataset = dcmread(io.BytesIO(encoded))
        dataset.walk(lambda ds, element: None)     # decode every element once
    except Exception as error:   # pydicom raises many types for damaged data
        return [f"it does not read back ({type(error).__name__})"]
    problems = []
    _walk_uids(dataset, problems)
    laterality = dataset.get("ImageLaterality")
    if laterality is not None and laterality not in IMAGE_LATERALITIES:
        problems.append("Image Laterality is not R, L, U or B")
    return problems


def _walk_uids(dataset: Dataset, problems: list[str]) -> None:
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                _walk_uids(item, problems)
        elif element.VR == "UI" and element.value not in (None, ""):
            values = element.value if element.VM > 1 else [element.value]
            for value in values:
                problem = uid_problem(value)
                if problem:
                    problems.append(f"{element.keyword or element.tag} {problem}")
