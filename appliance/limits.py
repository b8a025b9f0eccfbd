"""What a person may send or ask for at once, declared once: the code checks it, the OpenAPI
document (``ui.openapi``) states it.

A free-text field (a comment, a reason) is for a sentence or a paragraph, not a document; a
listing is for a page, and the next page is one more request.
"""

from dicom.validity import MAX_UID_CHARS  # PS3.5 9.1; stated here for the API

__all__ = ["MAX_IDEMPOTENCY_KEY_CHARS", "MAX_ROWS_LISTED", "MAX_RUNS_LISTED", "MAX_TEXT_CHARS",
           "MAX_UID_CHARS"]

MAX_TEXT_CHARS = 2000            # comments on labels and reviews, reasons for a flag
MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_RUNS_LISTED = 500            # GET /api/v1/runs?limit=
MAX_ROWS_LISTED = 1000           # audit events, adjudications

# A retraining started from the API (appliance.retraining): the bootstrap took 400 a network.
MAX_TRAINING_ITERATIONS = 20_000
