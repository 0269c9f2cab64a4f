"""Vault benchmark: ``encrypt_many`` / ``decrypt_many`` beside a raw AES-GCM floor, same run.

Usage (from the repository root)::

    .venv/bin/python bench/vault.py                       # 100k values, 20k owners
    .venv/bin/python bench/vault.py --values 10000 --owners 2000 --cache-size 20000

Data: ``--values`` values of 40 bytes (e-mail-like strings), spread over ``--owners`` identifier
anchors (owner ids from :func:`identity.model.new_node_id`), shuffled with ``--seed`` so a batch
holds values of many owners. The vault runs on temporary files (key file with
``synchronous=FULL``, a local KEK file) and is called with ``--batch-size`` items per call.

Rows (each timed with ``time.perf_counter``; generation and file set-up are not timed):

* ``floor encrypt`` / ``floor decrypt``: one AESGCM object with one key, a 12-byte
  ``os.urandom`` nonce per value, ``AESGCM.encrypt``/``decrypt`` of the same values: the least
  any AES-256-GCM encryption of these values costs in Python.
* ``encrypt (new keys)``: first ``encrypt_many`` pass: creates and wraps one DEK per owner and
  stores them (one key-store transaction, one fsync, per call that meets new owners).
* ``encrypt (keys exist)``: a second pass over the same items.
* ``decrypt (cold cache)``: ``decrypt_many`` with a fresh :class:`~privacy.keys.vault.Vault` (every
DEK
  unwrapped once, or again if the cache is smaller than the owners).
* ``decrypt (warm cache)``: a second decrypt pass with the same vault.

``ratio`` is µs/value of the row ÷ µs/value of the floor of the same direction. ``--json OUT``
also writes every row (seconds, µs/value, ratio) and the set-up as JSON. Exit status 0; 1 if the
decrypted values differ from the originals (a bug, never expected).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from identity.model import new_node_id  # noqa: E402 - after the path set-up above
from privacy.keys.keyprovider import LocalFileKeyProvider, create_kek_file  # noqa: E402
from privacy.keys.vault import Vault  # noqa: E402
from privacy.keys.vault_sqlite import SqliteVaultKeyStore  # noqa: E402

VALUE_BYTES = 40
T = TypeVar("T")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


Item = tuple[str, str, bytes]


def _make_items(values: int, owners: int, seed: int) -> list[Item]:
    """``values`` e-mail-like values of 40 bytes over ``owners`` anchors, shuffled."""
    anchors = [new_node_id() for _ in range(owners)]
    assignment = [anchors[i % owners] for i in range(values)]
    random.Random(seed).shuffle(assignment)
    return [
        (owner, "email", f"person{i:08d}@bench-mail-{i % 97:02d}.de".ljust(VALUE_BYTES).encode())
        for i, owner in enumerate(assignment)
    ]


def _floor(values: Sequence[bytes]) -> tuple[float, float]:
    """Seconds to encrypt, then decrypt, ``values`` with raw AES-256-GCM and one key."""
    key = AESGCM(AESGCM.generate_key(bit_length=256))
    sealed: list[tuple[bytes, bytes]] = []

    def encrypt() -> None:
        for value in values:
            nonce = os.urandom(12)  # a nonce per value, as the vault needs (its cost included)
            sealed.append((nonce, key.encrypt(nonce, value, None)))

    def decrypt() -> None:
        for nonce, data in sealed:
            key.decrypt(nonce, data, None)

    return _timed(encrypt), _timed(decrypt)


def _vault_rows(
    items: list[Item], batch_size: int, cache_size: int, work: Path
) -> tuple[list[tuple[str, float, str]], list[bytes], int]:
    """Time the four vault passes; returns the rows, the plaintexts decrypted and key count."""
    kek_path = work / "kek.json"
    create_kek_file(kek_path, origin="generated")
    provider = LocalFileKeyProvider(kek_path)
    store = SqliteVaultKeyStore(work / "vault-keys.sqlite3")
    try:
        writer = Vault(store, provider, cache_size=cache_size)
        reader = Vault(store, provider, cache_size=cache_size)  # starts with an empty cache
        blobs: list[bytes] = []
        plain: list[bytes] = []

        def encrypt_all(out: list[bytes]) -> None:
            for batch in _batches(items, batch_size):
                out.extend(writer.encrypt_many(batch))

        def decrypt_all(out: list[bytes]) -> None:
            encrypted = [(o, f, b) for (o, f, _), b in zip(items, blobs, strict=True)]
            for batch in _batches(encrypted, batch_size):
                out.extend(reader.decrypt_many(batch))

        rows = [
            ("encrypt (new keys)", _timed(lambda: encrypt_all(blobs)), "enc"),
            ("encrypt (keys exist)", _timed(lambda: encrypt_all([])), "enc"),
            ("decrypt (cold cache)", _timed(lambda: decrypt_all(plain)), "dec"),
            ("decrypt (warm cache)", _timed(lambda: decrypt_all([])), "dec"),
        ]
        return rows, plain, sum(writer.count_by_kek().values())
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--values", type=int, default=100_000)
    parser.add_argument("--owners", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1000, help="items per vault call")
    parser.add_argument("--cache-size", type=int, default=10_000, help="Vault DEK cache size")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write every row as JSON")
    args = parser.parse_args(argv)

    items = _make_items(args.values, args.owners, args.seed)
    values = [value for _, _, value in items]
    floor_enc, floor_dec = _floor(values)
    with tempfile.TemporaryDirectory(prefix="idgraph-bench-vault-") as work:
        vault_rows, plain, keys = _vault_rows(items, args.batch_size, args.cache_size, Path(work))
    if plain != values:
        print("ERROR: decrypted values differ from the originals")
        return 1

    print(
        f"vault bench: {args.values} values of {VALUE_BYTES} bytes, {args.owners} owners "
        f"({keys} data keys), batch {args.batch_size} items/call, cache {args.cache_size} keys"
    )
    print(f"{'mode':<24}{'seconds':>10}{'µs/value':>12}{'ratio':>10}")
    rows = [("floor encrypt", floor_enc, "enc"), ("floor decrypt", floor_dec, "dec"), *vault_rows]
    floors = {"enc": floor_enc, "dec": floor_dec}
    for name, seconds, direction in rows:
        print(
            f"{name:<24}{seconds:>10.3f}{seconds / len(values) * 1e6:>12.2f}"
            f"{seconds / floors[direction]:>9.1f}x"
        )
    if args.json:
        figures = {
            "values": args.values,
            "value_bytes": VALUE_BYTES,
            "owners": args.owners,
            "data_keys": keys,
            "batch_size": args.batch_size,
            "cache_size": args.cache_size,
            "rows": [
                {
                    "mode": name,
                    "direction": direction,
                    "seconds": round(seconds, 4),
                    "us_per_value": round(seconds / len(values) * 1e6, 3),
                    "ratio_to_floor": round(seconds / floors[direction], 3),
                }
                for name, seconds, direction in rows
            ],
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
