"""Helpers for tests that check a directory was left untouched."""

import hashlib
import os


def snapshot(directory):
    """{relative path: (sha256, mtime_ns)} of every file below `directory`."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            files[os.path.relpath(path, directory)] = (digest, os.stat(path).st_mtime_ns)
    return files
