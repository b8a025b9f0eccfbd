"""Who made an output object, from what, and the UIDs that make a resend harmless.

Every object carries the appliance as its equipment (Manufacturer, model name, software
version, serial), the model as algorithm identification or contributing equipment, and the run
id. Its UIDs are derived from (run id, object kind), so writing the same run again gives the
same SOP Instance UIDs and a PACS that already has them stores nothing new. A reviewed version
(a person corrected the cone masks and accepted the result) adds the review number to the
UIDs, so each accepted review is a new object next to the run's own, never a replacement.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import highdicom as hd

from dicom import codes
from dicom.opt import uid_from
from dicom.validity import fitted

MANUFACTURER = "AOMAS"
MODEL_NAME = "AOMAS AO-OCT Microstructure Analytics System"

# Series numbers keep the outputs in a fixed order in a viewer's series list; reviewed versions
# sort right after the run's own (905 → 915, 906 → 916).
SERIES_NUMBERS = {"derived_opt": 901, "layer_seg": 902, "enface_isos": 903,
                  "enface_cost": 904, "cone_seg": 905, "report": 906}
REVIEWED_SERIES_OFFSET = 10


@dataclass(frozen=True)
class Provenance:
    run_id: str
    software_version: str        # package version + git commit
    model_id: str
    weights_sha256: str
    device_serial_number: str    # this appliance
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    review_number: int = 0       # 0: the run's own outputs; n: its n-th accepted review
    reviewed_by: str = ""        # the account that accepted the review (staff, not patient)

    def uid(self, kind: str, part: str = "instance") -> str:
        if self.review_number:
            return uid_from("aomas-output", self.run_id, f"review-{self.review_number}", kind,
                            part)
        return uid_from("aomas-output", self.run_id, kind, part)

    def tracking_uid(self, label: str) -> str:
        """The same region in every version of the report keeps its tracking UID."""
        return uid_from("aomas-output", self.run_id, "report", label)

    def series_number(self, kind: str) -> int:
        return SERIES_NUMBERS[kind] + (REVIEWED_SERIES_OFFSET if self.review_number else 0)

    @property
    def description(self) -> str:
        """A LO value: who reviewed goes into the content creator's name, not here."""
        review = f", review {self.review_number}" if self.review_number else ""
        return fitted(f"AOMAS run {self.run_id}{review}", "LO", "the content description")

    def series_uid(self, kind: str) -> str:
        return self.uid(kind, "series")

    @property
    def model_version(self) -> str:
        return self.weights_sha256[:16]

    def algorithm(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=self.model_id, family=codes.ARTIFICIAL_INTELLIGENCE, version=self.model_version,
            source=MANUFACTURER, parameters={"run_id": self.run_id})

    def contributing_equipment(self) -> hd.ContributingEquipment:
        return hd.ContributingEquipment(
            manufacturer=MANUFACTURER, purpose_of_reference=codes.MODIFYING_EQUIPMENT,
            manufacturer_model_name=self.model_id, software_versions=self.software_version,
            device_serial_number=self.device_serial_number,
            contribution_datetime=self.created_at,
            # The model's name is the model name above; run and weights fit in 64 characters.
            contribution_description=fitted(f"run {self.run_id}, model {self.model_version}",
                                            "LO", "the contribution description"))
