"""What code produced a result: the package version and the git commit it was built from."""

from __future__ import annotations

import functools
import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@functools.cache
def pipeline_version() -> dict[str, str]:
    try:
        package = version("aomas")
    except PackageNotFoundError:
        package = "0+unknown"
    return {"package": package, "commit": _git_commit()}


def _git_commit(source: Path | None = None) -> str:
    source = source or Path(__file__).resolve().parent.parent
    # Read the repository, never write it: `git status` refreshes the index and takes
    # .git/index.lock, which would race a person or a deployment working in the tree.
    read_only = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], timeout=5,
                                capture_output=True, text=True, check=True,
                                env=read_only).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain",
                                "--untracked-files=no"], timeout=5, capture_output=True,
                               text=True, check=True, env=read_only).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    # A run made from uncommitted code cannot be reproduced from the commit alone: say so.
    return commit + ("-dirty" if dirty else "")
