"""English sentences for ``nightly_translations``, generated offline and deterministically.

Short sentences composed from the tiny demo tokenizer's words (:mod:`.tiny_models`) with a seeded
RNG, so every machine gets the same table; a few rows per day are unscorable (null, empty,
whitespace) to show the rejects table at work.
"""

from __future__ import annotations

import datetime as dt
import random

import pandas as pd

SUBJECTS = ["the cat", "a dog", "the bird", "my old dog", "your small cat", "we", "they", "you"]
VERBS = ["sees", "likes", "reads", "walks to", "runs to", "sleeps in", "eats in", "writes"]
OBJECTS = [
    "the house", "a big garden", "the red book", "a letter", "the river", "this city", "the new mat",
    "a blue house", "the green garden", "that white book",
]  # fmt: skip
TIMES = ["today", "this morning", "at night", "", "", "by the river", "with my dog"]
BROKEN_SENTENCES = [None, "", "  \t "]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TIMES)]
    return " ".join(w for w in words if w) + "."


def sample_sentences(dates: list[dt.date], per_day: int, seed: int = 3) -> pd.DataFrame:
    """``per_day`` sentences for each date (``id``, ``sentence``, ``date``), ids unique across
    dates; the first rows of each date are :data:`BROKEN_SENTENCES`."""
    rng = random.Random(seed)
    rows, next_id = [], 1
    for day in dates:
        for i in range(per_day):
            text = BROKEN_SENTENCES[i] if i < len(BROKEN_SENTENCES) else _sentence(rng)
            rows.append({"id": next_id, "sentence": text, "date": day.isoformat()})
            next_id += 1
    return pd.DataFrame(rows)
