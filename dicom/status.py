"""DIMSE status codes the SCP answers with (PS3.4 Annex B, PS3.7 Annex C)."""

SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
PROCESSING_FAILURE = 0x0110


def is_warning(status: int) -> bool:
    """Stored, with a warning (coercion, elements discarded): 0x0001 and 0xBxxx."""
    return status == 0x0001 or 0xB000 <= status <= 0xBFFF


def is_transient(status: int) -> bool:
    """Worth sending again later: the peer ran out of resources (0xA7xx)."""
    return 0xA700 <= status <= 0xA7FF
