"""Sample input for the digits DAG: scikit-learn's 8x8 digits as ``array<float>`` rows by date.

Each date gets ``per_day`` images (cycling through the 1797 in a seeded order) with their ``label``,
plus a few unscorable rows (wrong length, NaN, null) to exercise the rejects table.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

BROKEN_PER_DAY = 3


def sample_digits(days: list[dt.date], per_day: int, seed: int = 7, broken: bool = True) -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    rows = []
    for d, day in enumerate(days):
        for i in range(per_day):
            index = int(order[(d * per_day + i) % len(order)])
            rows.append(
                {
                    "id": f"{day.isoformat()}-{i:05d}",
                    "date": day.isoformat(),
                    "pixels": digits.data[index].astype(np.float32).tolist(),
                    "label": int(digits.target[index]),
                }
            )
        if broken:
            nan_row = digits.data[0].astype(np.float32).tolist()
            nan_row[5] = float("nan")
            for j, pixels in enumerate([[1.0] * 10, nan_row, None]):
                rows.append({"id": f"{day.isoformat()}-bad{j}", "date": day.isoformat(),
                             "pixels": pixels, "label": -1})  # fmt: skip
    return pd.DataFrame(rows)


def write_digits_table(table: str, days: list[dt.date], per_day: int, seed: int = 7) -> int:
    """Write (overwrite) the digits input table partitioned by date; returns its Delta version."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    frame = sample_digits(days, per_day, seed)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("date", pa.string()),
            ("pixels", pa.list_(pa.float32())),
            ("label", pa.int64()),
        ]
    )
    # Built column by column with from_pandas=False: pandas conversion would turn NaN pixels into nulls.
    arrow = pa.Table.from_arrays(
        [pa.array(frame[name].tolist(), type=field.type, from_pandas=False) for name, field in
         zip(schema.names, schema, strict=True)],
        schema=schema,
    )  # fmt: skip
    write_deltalake(table, arrow, partition_by=["date"], mode="overwrite")
    return DeltaTable(table).version()


def main(argv: list[str] | None = None) -> int:
    """``python -m airflow_spark_triton.demo.sample_digits [--date D] [--per-day N]``: the DAG's input."""
    import argparse
    import os
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--date", default=(dt.date.today() - dt.timedelta(days=1)).isoformat())
    parser.add_argument("--per-day", type=int, default=500)
    parser.add_argument("--days", type=int, default=3)
    root = Path(os.environ.get("SPARK_TRITON_DATA_DIR", Path.home() / "spark_triton_data"))
    parser.add_argument("--table", default=str(root / "digits"))
    args = parser.parse_args(argv)
    last = dt.date.fromisoformat(args.date)
    days = [last - dt.timedelta(days=n) for n in reversed(range(args.days))]
    version = write_digits_table(args.table, days, args.per_day)
    print(
        f"{args.table}: {args.per_day} images (+{BROKEN_PER_DAY} unscorable) per day for {days[0]}..{last}, v{version}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
