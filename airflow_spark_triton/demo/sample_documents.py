"""Real-looking support tickets and product reviews, generated offline and deterministically.

The demo needs a few thousand varied English documents without a dataset download; sentences are
composed from phrase banks with a seeded RNG so every machine gets the same table. A handful of
rows are deliberately unscorable (null, empty, whitespace) to show the rejects table at work.
"""

from __future__ import annotations

import datetime as dt
import random

import pandas as pd

PRODUCTS = [
    "wireless earbuds", "standing desk", "espresso machine", "mechanical keyboard", "4K monitor",
    "robot vacuum", "smart thermostat", "trail running shoes", "air purifier", "electric kettle",
    "noise-cancelling headphones", "office chair", "laptop stand", "fitness tracker", "rice cooker",
    "portable charger", "bluetooth speaker", "gaming mouse", "water filter", "yoga mat",
]  # fmt: skip
OPENINGS = [
    "I bought the {p} last month and", "Our team ordered three {p}s and", "The {p} arrived yesterday and",
    "After two weeks with the {p},", "I have been using this {p} daily and", "My replacement {p}",
    "Compared to my old one, the new {p}", "The {p} I received as a gift",
]  # fmt: skip
PRAISE = [
    "it works exactly as described", "the build quality is excellent", "setup took less than five minutes",
    "battery life is better than advertised", "it is quieter than I expected", "customer support was quick",
    "the design looks great on my desk", "it was worth every penny",
]  # fmt: skip
COMPLAINTS = [
    "it stopped charging after a few days", "the left side keeps disconnecting", "it makes a loud rattling noise",
    "the app crashes every time I open settings", "one of the screws was missing from the box",
    "the firmware update bricked it", "it overheats after an hour of use", "the color is not what the photos show",
]  # fmt: skip
REQUESTS = [
    "Can I get a refund?", "Please send a replacement.", "Is there a fix coming?", "How do I reset it?",
    "Would you recommend a different model?", "Is this covered by the warranty?", "", "Thanks!",
]  # fmt: skip
BROKEN_TEXTS = [None, "", "   \t  "]


def _document(rng: random.Random) -> str:
    product = rng.choice(PRODUCTS)
    opening = rng.choice(OPENINGS).format(p=product)
    if rng.random() < 0.5:
        body = f"{rng.choice(PRAISE)}, and {rng.choice(PRAISE)}."
    else:
        body = f"{rng.choice(PRAISE)}, but {rng.choice(COMPLAINTS)}."
    return f"{opening} {body} {rng.choice(REQUESTS)}".strip()


def sample_documents(
    dates: list[dt.date], per_day: int, seed: int = 7, broken_per_day: int = 3
) -> pd.DataFrame:
    """``per_day`` documents for each date, ids unique across dates, the first ``broken_per_day`` unscorable."""
    rng = random.Random(seed)
    rows = []
    next_id = 1
    for day in dates:
        for i in range(per_day):
            text = BROKEN_TEXTS[i % len(BROKEN_TEXTS)] if i < broken_per_day else _document(rng)
            rows.append({"id": next_id, "text": text, "date": day.isoformat()})
            next_id += 1
    return pd.DataFrame(rows).astype({"id": "int64", "text": "object", "date": "object"})
