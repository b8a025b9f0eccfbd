"""A short, fixed-seed slice of the fuzz campaign (`make fuzz` runs a million inputs per
target): each target takes its inputs without a finding, a crash or a hang."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import TARGETS

RUNS = 3000


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_fixed_seed_slice_finds_nothing(target, tmp_path):
    # libFuzzer bounds the peak RSS (getrusage), and a child of this pytest process starts with
    # ours (Linux records the parent's resident pages at exec): the bound is 1 GiB above it.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    result = subprocess.run([sys.executable, "-m", "fuzz.run", target, "--runs", str(RUNS),
                             "--seed", "1", "--rss-limit-mb", str(inherited_mb + 1024)],
                            capture_output=True, text=True, timeout=600,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {RUNS} runs" in result.stderr


def test_the_targets_tell_a_refusal_from_a_finding(monkeypatch):
    from fuzz import targets

    targets.header(b"garbage")                 # refused (0xC000 on the wire): not a finding
    targets.pdu(b"\x04\x00\xff\xff\xff\xff")   # refused unread (A-ABORT): not a finding

    def escapes(*args):
        raise KeyError("escaped")

    monkeypatch.setattr(targets, "read_header", escapes)
    with pytest.raises(targets.Finding, match="KeyError"):
        targets.header(b"anything")


@pytest.mark.parametrize("name, reason", [
    # Found by `make fuzz` (header, seed 1). A Rows of odd length decoded lazily, after the
    # header reader's error handling, and escaped as BytesLengthException (0x0110 on the wire
    # instead of 0xC000); a SOP Instance UID whose damaged VR made it a sequence escaped as
    # NotImplementedError when the UID check printed it. Both kept in the seed corpus too.
    ("regression-rows-odd-length", "BytesLengthException"),
    ("regression-uid-not-text", "SOPInstanceUID is not text"),
])
def test_the_fuzzers_findings_stay_fixed(name, reason, tmp_path):
    from pydicom.uid import ExplicitVRLittleEndian

    from dicom.scp import UnreadableHeader, read_header

    found = Path(__file__).parent.parent / "fuzz" / "corpus" / "header" / name
    path = tmp_path / "input.dcm"
    path.write_bytes(found.read_bytes())
    with pytest.raises(UnreadableHeader, match=reason):
        read_header(path, ExplicitVRLittleEndian, "FUZZ", "fuzz", 0.0)
