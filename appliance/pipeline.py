"""The pipeline: one plain function that reads as the data flow of a run.

Today it loads and validates the volume. The imaging steps (motion correction, layer and cone
segmentation, quantification) and the DICOM outputs plug in where marked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from appliance.exceptions import InvalidInput, TransientError
from dicom.volume import VolumeError, read_volume

log = logging.getLogger(__name__)


def run_pipeline(run: dict[str, Any], instance_paths: list[Path]) -> dict[str, Any]:
    """Process one run's stored instances; return the result recorded with the run.

    Raises ``InvalidInput`` for data that will never process (the run fails at once) and
    ``TransientError`` for failures worth retrying.
    """
    try:
        volume = read_volume(instance_paths)
    except VolumeError as error:
        raise InvalidInput(str(error)) from None
    except OSError as error:
        raise TransientError(f"a stored instance could not be read ({error})") from None
    log.info("run %s: volume %s, spacing %s mm", run["run_id"], volume.voxels.shape,
             volume.spacing_mm)
    # Next: motion correction → layer surfaces → en-face projections → cone segmentation →
    # quantification → DICOM outputs (issues 3 and 4).
    return {"volume": volume.describe()}
