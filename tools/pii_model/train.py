"""Train idgraph's PII NER model (``make pii-model``): seeded corpus, CPU, a few minutes.

    .venv/bin/python -m tools.pii_model.train [--count 8000] [--epochs 4] [--seed 16]

Builds a blank multi-language spaCy pipeline (``xx``: a tokenizer with no language-specific
rules, since the scanner reads EN, DE, FR and more) with one ``ner`` component on spaCy's
default small CNN (hash embeddings of NORM/PREFIX/SUFFIX/SHAPE, no word vectors: nothing to
download), trains it on :mod:`tools.pii_model.corpus`, and writes the model to
``privacy/scanning/models/pii_ner/`` with its word lists (``lexicon.json``,
:mod:`tools.pii_model.lexicon`) and its fingerprint. The run is deterministic for a
seed on one thread with ``PYTHONHASHSEED=0`` (the module re-runs itself with both set), so the
same command on the same spaCy and Faker versions rebuilds the same files.
"""

from __future__ import annotations

import os
import sys

# Faker iterates over sets in a few providers, so the corpus depends on str hashing: pin it
# (and one BLAS thread) by re-running this module in an interpreter that has them set.
_PINNED = {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
if any(os.environ.get(k) != v for k, v in _PINNED.items()):  # pragma: no cover - re-exec
    os.execve(  # noqa: S606 - this same script, a fixed argv
        sys.executable,
        [sys.executable, "-m", "tools.pii_model.train", *sys.argv[1:]],
        {**os.environ, **_PINNED},
    )

import argparse
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import spacy
from spacy.about import __version__ as spacy_version
from spacy.training import Example
from spacy.util import minibatch
from thinc.api import compounding, fix_random_seed

from privacy.scanning.model_files import model_fingerprint
from tools.pii_model.corpus import generate
from tools.pii_model.lexicon import write_lexicon
from tools.pii_model.values import NER_LABELS

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "privacy" / "scanning" / "models" / "pii_ner"
MODEL_NAME = "idgraph_pii_ner"
MODEL_VERSION = "2.1.0"
# spaCy's default NER model (a transition-based parser on a HashEmbedCNN tok2vec: hash
# embeddings of NORM, PREFIX, SUFFIX and SHAPE, so spelling and character shape count, not a
# fixed vocabulary) with more hash rows than the default 2,000: version 2 sees 33 locales' names,
# and fewer collisions between them cost no time per token, only ~2 MB on disk. Width and depth
# stay at the defaults: they set the cost of every scanned value.
NER_MODEL = {
    "@architectures": "spacy.TransitionBasedParser.v2",
    "state_type": "ner",
    "extra_state_tokens": False,
    "hidden_width": 64,
    "maxout_pieces": 2,
    "use_upper": True,
    "nO": None,
    "tok2vec": {
        "@architectures": "spacy.HashEmbedCNN.v2",
        "pretrained_vectors": None,
        "width": 96,
        "depth": 4,
        "embed_size": 3000,
        "window_size": 1,
        "maxout_pieces": 3,
        "subword_features": True,
    },
}


def _examples(
    nlp: spacy.language.Language, rows: list[tuple[str, list[tuple[int, int, str]]]]
) -> list[Example]:
    out = []
    for text, spans in rows:
        reference = nlp.make_doc(text)
        # "expand": a span that ends inside a token ("Nyrt." + ".") labels the whole token.
        ents = [reference.char_span(s, e, label, alignment_mode="expand") for s, e, label in spans]
        reference.ents = spacy.util.filter_spans([ent for ent in ents if ent is not None])
        out.append(Example(nlp.make_doc(text), reference))
    return out


def _write(nlp: spacy.language.Language, out_dir: Path) -> None:
    nlp.meta.update(
        {
            "name": MODEL_NAME.removeprefix("xx_"),
            "version": MODEL_VERSION,
            "description": "idgraph PII NER: PERSON, LOCATION, ORGANIZATION, STREET_ADDRESS; "
            "trained on a seeded synthetic corpus (tools/pii_model).",
            "license": "Apache-2.0",
            "author": "idgraph",
        }
    )
    # Volatile or machine-specific meta would change the fingerprint on every rebuild.
    nlp.meta.pop("performance", None)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(out_dir)
    # The word lists the scanner reviews the model's entities with (tools/pii_model/lexicon.py):
    # part of the model directory, so the pinned fingerprint covers them too.
    write_lexicon(out_dir)


def train(
    count: int, epochs: int, seed: int, out_dir: Path, checkpoints: Path | None = None
) -> dict[str, object]:
    """Train and write the model; return the figures for the model card.

    With ``checkpoints``, the model after every epoch is also written there (``epoch-N``).
    """
    fix_random_seed(seed)
    started = time.perf_counter()
    nlp = spacy.blank("xx")
    ner: Any = nlp.add_pipe("ner", config={"model": NER_MODEL})
    for label in NER_LABELS:
        ner.add_label(label)
    rows = generate(count, seed)
    dev_rows = generate(max(count // 10, 200), seed + 1)
    examples = _examples(nlp, rows)
    dev = _examples(nlp, dev_rows)
    optimizer = nlp.initialize(lambda: examples)
    rng = random.Random(seed)
    losses: dict[str, float] = {}
    for epoch in range(epochs):
        rng.shuffle(examples)
        losses = {}
        batches = minibatch(examples, size=compounding(8.0, 64.0, 1.001))  # type: ignore[no-untyped-call]
        for batch in batches:
            nlp.update(batch, drop=0.2, sgd=optimizer, losses=losses)
        scores = nlp.evaluate(dev)
        print(
            f"epoch {epoch + 1:>2}/{epochs}: loss {losses.get('ner', 0.0):9.1f}  "
            f"dev P {scores['ents_p']:.3f} R {scores['ents_r']:.3f} F {scores['ents_f']:.3f}",
            flush=True,
        )
        if checkpoints:
            # The model after this epoch is the model of a run with --epochs epoch+1 (nothing
            # in an epoch depends on the total), so a long run on a busy machine can stop early.
            _write(nlp, checkpoints / f"epoch-{epoch + 1}")
    scores = nlp.evaluate(dev)
    _write(nlp, out_dir)
    return {
        "seed": seed,
        "sentences": count,
        "epochs": epochs,
        "spacy_version": spacy_version,
        "train_seconds": round(time.perf_counter() - started, 1),
        "dev_in_distribution": {
            "precision": round(scores["ents_p"], 4),
            "recall": round(scores["ents_r"], 4),
            "f": round(scores["ents_f"], 4),
            "per_type": {
                k: {m: round(v, 4) for m, v in d.items()}
                for k, d in (scores.get("ents_per_type") or {}).items()
            },
        },
        "fingerprint": model_fingerprint(out_dir),
        "size_bytes": sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()),
    }


def main() -> None:
    """Parse arguments, train, print the fingerprint to pin in the scanner."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    parser.add_argument("--figures", type=Path, help="write the training figures as JSON")
    parser.add_argument("--checkpoints", type=Path, help="also write the model of every epoch here")
    args = parser.parse_args()
    figures = train(args.count, args.epochs, args.seed, args.out, args.checkpoints)
    print(json.dumps(figures, indent=2))
    if args.figures:
        args.figures.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
