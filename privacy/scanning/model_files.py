"""The fingerprint of a model directory: one sha256 over every file's path and content.

The scanner refuses to load an NER model whose fingerprint differs from the one pinned in code
(:data:`privacy.scanning.presidio_scanner.PII_NER_MODEL_SHA256`). A model decides what counts as
personal data, so a model swapped on disk, half-written or corrupted is a privacy control that
silently changed; failing at startup is the safe answer. Pure stdlib: the training tool
(``tools/pii_model/train.py``) and the scanner compute it the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["model_fingerprint"]


def model_fingerprint(directory: Path) -> str:
    """sha256 over ``relative/path NUL sha256(content) LF`` of every file, in sorted order.

    Paths are POSIX and relative, so the fingerprint is the same wherever the repository lives.
    Raises ``FileNotFoundError`` if ``directory`` is not a directory.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory {directory} does not exist")
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative.startswith(".") or "/__pycache__/" in f"/{relative}":
            continue
        digest.update(relative.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode("ascii") + b"\n")
    return digest.hexdigest()
