"""No log line carries a patient's name or ID: a fuzz corpus whose every input holds a known
name and ID goes to the real appliance (`aomas serve`) over DICOM, and neither may appear in
any log it writes, from our code or from a library (pydicom quotes what it read when a
corrupted UID length runs on into the patient's name)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from pydicom import dcmread

from dicom.redaction import WITHHELD, PatientDataFilter, withhold_values
from dicom.send import send_files

PATIENT_NAME, PATIENT_ID = "CANARY^LEAKTEST", "CANARYID0451"
# Explicit VR little endian tags of UIDs that precede the patient module in the file.
UID_ELEMENTS = [b"\x08\x00\x16\x00UI", b"\x08\x00\x18\x00UI", b"\x20\x00\x0d\x00UI",
                b"\x20\x00\x0e\x00UI"]
CORPUS_SIZE = 160


def canary_files(source: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True)
    files = []
    for index, path in enumerate(sorted(source.glob("*.dcm"))):
        dataset = dcmread(path)
        dataset.PatientName, dataset.PatientID = PATIENT_NAME, PATIENT_ID
        files.append(out / f"{index:03d}.dcm")
        dataset.save_as(files[-1])
    return files


def mutants(seeds: list[Path], out: Path, count: int) -> list[Path]:
    """Broken copies: UID lengths that overrun, flipped bytes, truncations (fixed seed)."""
    rng = random.Random(451)
    out.mkdir(parents=True)
    made = []
    for index in range(count):
        data = bytearray(rng.choice(seeds).read_bytes())
        meta_end = data.index(b"\x08\x00")       # first dataset element after the meta
        kind = index % 3
        if kind == 0:
            at = data.find(rng.choice(UID_ELEMENTS), meta_end)
            if at > 0:
                data[at + 6:at + 8] = rng.choice([200, 400, 1000, 0xFFFF]).to_bytes(2, "little")
        elif kind == 1:
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(meta_end, min(len(data), meta_end + 600))] = rng.randrange(256)
        else:
            data = data[:rng.randrange(meta_end, len(data))]
        made.append(out / f"mutant{index:03d}.dcm")
        made[-1].write_bytes(bytes(data))
    return made


def test_no_log_line_carries_the_patients_name_or_id(box, studies, tmp_path):
    seeds = canary_files(studies["split"]["dir"], tmp_path / "seeds")
    corpus = mutants(seeds, tmp_path / "corpus", CORPUS_SIZE)
    assert sum(PATIENT_NAME.encode() in p.read_bytes() for p in corpus) > CORPUS_SIZE * 0.8
    box.start()
    remaining, results = list(corpus), []
    while remaining:          # an aborted association ends a batch: send the rest again
        sent = send_files(remaining, "127.0.0.1", box.dicom_port)
        done = [r for r in sent if r.error != "association ended"]
        results += done
        remaining = [r.path for r in sent if r.error == "association ended"]
        if not done:
            break
    refused = [r for r in results if r.status not in (0x0000, None)]
    assert len(refused) > CORPUS_SIZE // 4, "the corpus should be mostly refused"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and box.query(
            "SELECT 1 FROM runs WHERE state IN ('QUEUED', 'RUNNING')"):
        time.sleep(0.5)
    log = box.log()
    assert "Invalid value for VR UI" in log     # the lines that would have quoted the name
    assert WITHHELD in log
    for secret in (PATIENT_NAME, "CANARY", PATIENT_ID, "LEAKTEST"):
        assert secret not in log, log[max(log.find(secret) - 300, 0):log.find(secret) + 100]


def test_the_filter_withholds_quoted_values_of_libraries_only(caplog):
    import logging

    record = logging.LogRecord("pydicom.valuerep", logging.WARNING, __file__, 1,
                               "Invalid value for VR UI: %r.", ("1.2\x10\x00PN O'BRIEN^PAT",),
                               None)
    PatientDataFilter().filter(record)
    assert record.getMessage() == f"Invalid value for VR UI: {WITHHELD}."
    ours = logging.LogRecord("dicom.scp", logging.WARNING, __file__, 1, "from %r", ("SCANNER",),
                             None)
    PatientDataFilter().filter(ours)
    assert ours.getMessage() == "from 'SCANNER'"
    long = logging.LogRecord("dicom.scp", logging.ERROR, __file__, 1, "x" * 70_000, (), None)
    PatientDataFilter().filter(long)
    assert len(long.getMessage()) < 2100
    assert withhold_values("value b'\\x00DOE^JOHN' read") == f"value {WITHHELD} read"
