"""Write the seed corpus (fuzz/corpus/<target>/) from a small phantom: a split-series OPT
instance's header, and the PDUs of a real association (A-ASSOCIATE-RQ, P-DATA, release)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, evt

from appliance.demo.study import write_phantom_study
from gpu.phantom import PhantomSpec

CORPUS = Path(__file__).parent / "corpus"
VERIFICATION = "1.2.840.10008.1.1"


def dataset_headers() -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        write_phantom_study(Path(tmp), PhantomSpec(seed=7, b_scans=16, depth=112, a_lines=32),
                            split_frames=True)
        path = sorted((Path(tmp) / "dicom").glob("*.dcm"))[0]
        data = path.read_bytes()
        pixels = data.rfind(b"\xe0\x7f\x10\x00")          # (7FE0,0010) Pixel Data
        assert dcmread(path).SOPInstanceUID
        return [data[:pixels + 64]]


def association_pdus() -> list[bytes]:
    """What a requestor really sends: recorded from an association with a local pynetdicom
    SCP (A-ASSOCIATE-RQ, the P-DATA of a C-ECHO, A-RELEASE-RQ)."""
    sent: list[bytes] = []
    scp = AE(ae_title="AOMAS")
    scp.add_supported_context(VERIFICATION)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    try:
        scu = AE(ae_title="FUZZ")
        scu.add_requested_context(VERIFICATION)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="AOMAS",
                              evt_handlers=[(evt.EVT_DATA_SENT,
                                             lambda event: sent.append(event.data))])
        assoc.send_c_echo()
        assoc.release()
    finally:
        server.shutdown()
    return sent


def main() -> None:
    headers = dataset_headers()
    seeds = {"header": headers, "upload": [h[132:] for h in headers], "pdu": association_pdus()}
    for target, inputs in seeds.items():
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
        for index, data in enumerate(inputs):
            (CORPUS / target / f"seed-{index}").write_bytes(data)
        print(target, [len(d) for d in inputs])


if __name__ == "__main__":
    main()
