"""``python -m fuzz.run TARGET [--runs N] [--seed S]``: coverage-guided fuzzing (atheris,
libFuzzer) of one target in fuzz/targets.py, from the seed corpus in fuzz/corpus/TARGET.
Prints the inputs run and exits non-zero on a finding (its input is saved as crash-*)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["dicom", "appliance", "pydicom", "pynetdicom"]):
    from fuzz import targets

CORPUS = Path(__file__).parent / "corpus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", choices=sorted(targets.TARGETS))
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--rss-limit-mb", type=int, default=1024,
                        help="libFuzzer's memory bound (it reads the peak RSS, which a process "
                             "started from a large one inherits across exec)")
    arguments = parser.parse_args()
    warnings.simplefilter("ignore")     # pydicom warns about every invalid value it reads
    import logging
    logging.disable(logging.CRITICAL)
    corpus = CORPUS / arguments.target
    corpus.mkdir(parents=True, exist_ok=True)
    work = Path(targets.SPOOL) / "corpus"
    work.mkdir(exist_ok=True)
    argv = [sys.argv[0], str(work), str(corpus), f"-runs={arguments.runs}",
            f"-seed={arguments.seed}", f"-max_len={arguments.max_len}", "-timeout=5",
            f"-rss_limit_mb={arguments.rss_limit_mb}", "-print_final_stats=1",
            f"-artifact_prefix={Path.cwd()}/crash-{arguments.target}-"]
    atheris.Setup(argv, targets.TARGETS[arguments.target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
