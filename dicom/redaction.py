"""Keeping received values out of the logs.

A dataset from a broken or hostile peer can make a library describe what it read: pydicom's
"Invalid value for VR UI: '…'" quotes a UID whose corrupted length ran on into PatientName and
PatientID. No log line may carry patient data, so every line from a DICOM library has its
quoted values withheld, at the handler (``PatientDataFilter``), whichever thread or library
wrote it; and every line is cut to ``MAX_MESSAGE_CHARS``, so a 60 KB value cannot flood the
journal either. Our own code logs UIDs, AE titles and addresses, never names or IDs.
"""

from __future__ import annotations

import logging
import re

# From the first quote to the last of the same kind: a value with quotes inside it (O'Brien)
# cannot end the match early and leave its tail in the line.
QUOTED = re.compile(r"""b?'.*'|b?".*"|bytearray\(.*\)""", re.DOTALL)
WITHHELD = "<value withheld>"
MAX_MESSAGE_CHARS = 2000
# Loggers that may quote received values: DICOM libraries, and Python warnings (pydicom warns
# and logs the same message; logging.captureWarnings routes warnings through here).
LIBRARIES = ("pydicom", "pynetdicom", "highdicom", "py.warnings")


def withhold_values(text: str) -> str:
    """``text`` with every quoted value (and bytes literal) replaced by a placeholder."""
    return QUOTED.sub(WITHHELD, text)


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters not logged)"


class PatientDataFilter(logging.Filter):
    """A handler filter: library lines lose their quoted values (tracebacks included), and
    every line is shortened."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_library = record.name.split(".")[0] in LIBRARIES or record.name == "py.warnings"
        message = record.getMessage()
        if from_library:
            message = withhold_values(message)
        if record.exc_info:
            trace = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, shorten(
                withhold_values(trace) if from_library else trace, 4 * MAX_MESSAGE_CHARS)
        record.msg, record.args = shorten(message), ()
        return True


def install(root: logging.Logger | None = None) -> None:
    """Route warnings through logging and filter every handler of the root logger."""
    logging.captureWarnings(True)
    for handler in (root or logging.getLogger()).handlers:
        if not any(isinstance(f, PatientDataFilter) for f in handler.filters):
            handler.addFilter(PatientDataFilter())
