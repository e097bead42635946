"""How much padding a text model computes when batches come in table order, and when length-ordered.

A batch pads to its longest row, so its cost is ``rows x longest`` tokens against ``sum(lengths)``
useful ones. This program tokenizes the bench's documents with the model's own tokenizer and prints
that ratio for the batches each path forms: in table order (Ray Data's ``map_batches``, plain torch,
and the Spark paths before ``spark_jobs.batch_order``), and sorted within each of the input's Spark
partitions (what ``spark_jobs.batch_order.length_ordered`` does, and what MLflow's
sentence-transformers flavor does inside each ``spark_udf`` call). Without ``--time`` no model runs:
the numbers are exact token counts, the same on every machine.

``--time`` also runs the model (MiniLM's infer function, the one every bench path calls) on the
same batches in both orders, single-threaded like a Spark Python worker or a Triton instance, and
prints the CPU seconds of each. The two orders alternate batch by batch (which goes first flips
every batch), so a machine whose speed drifts over minutes, as this project's VM does
(TUNING.md, "Stability"), slows both alike: the ratio is the model's, not the machine's.

    python -m benchmarks.padding                       # 20,000 documents, 8 partitions, batches of 64
    python -m benchmarks.padding --rows 2000 --partitions 4 --batch-size 16
    python -m benchmarks.padding --rows 6000 --time    # the model's CPU in both orders (~3 min)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Callable, Sequence


def partition_slices(rows: int, partitions: int) -> list[slice]:
    """Contiguous, near-equal partitions, as Spark reads a single-file table split into ``partitions``."""
    bounds = [rows * p // partitions for p in range(partitions + 1)]
    return [slice(bounds[p], bounds[p + 1]) for p in range(partitions)]


def batches_in_both_orders(
    lengths: Sequence[int], partitions: int, batch_size: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Row indices of every batch, in table order and length-ordered within each partition."""
    table: list[list[int]] = []
    ordered: list[list[int]] = []
    for part in partition_slices(len(lengths), partitions):
        rows = list(range(part.start, part.stop))
        by_length = sorted(rows, key=lambda i: lengths[i])
        for i in range(0, len(rows), batch_size):
            table.append(rows[i : i + batch_size])
            ordered.append(by_length[i : i + batch_size])
    return table, ordered


def padded_tokens(lengths: Sequence[int], batches: list[list[int]]) -> int:
    """Tokens computed when each batch (row indices) is padded to its longest row."""
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def padding_ratios(lengths: Sequence[int], partitions: int, batch_size: int) -> dict[str, float]:
    """Padded over useful tokens for batches in table order and length-ordered within partitions."""
    useful = sum(lengths)
    table, ordered = batches_in_both_orders(lengths, partitions, batch_size)
    in_order, sorted_order = padded_tokens(lengths, table), padded_tokens(lengths, ordered)
    return {
        "table_order": round(in_order / useful, 3),
        "length_ordered": round(sorted_order / useful, 3),
        "table_over_length_ordered": round(in_order / sorted_order, 3),
    }


def interleaved_cpu_seconds(
    run: Callable[[list[int]], object], table: list[list[int]], ordered: list[list[int]]
) -> dict[str, float]:
    """CPU seconds of ``run`` over every batch of each order, the orders alternating batch by batch."""
    spent = {"table_order": 0.0, "length_ordered": 0.0}
    for i, pair in enumerate(zip(table, ordered, strict=True)):
        order = (("table_order", pair[0]), ("length_ordered", pair[1]))
        for name, batch in order if i % 2 == 0 else order[::-1]:
            started = time.process_time()
            run(batch)
            spent[name] += time.process_time() - started
    return {name: round(seconds, 2) for name, seconds in spent.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=8, help="the bench's input partitions")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per model batch")
    parser.add_argument("--time", action="store_true", help="also time the model in both orders")
    args = parser.parse_args(argv)

    from airflow_spark_triton.demo.sample_documents import sample_documents
    from spark_jobs.models.minilm import load_sentence_transformer

    frame = sample_documents([dt.date(2026, 1, 1)], args.rows, broken_per_day=0)
    tokenizer = load_sentence_transformer({"device": "cpu"}).tokenizer  # MiniLM's, as the model has it
    lengths = [len(ids) for ids in tokenizer(list(frame["text"]), truncation=True)["input_ids"]]
    result = {
        "rows": args.rows,
        "partitions": args.partitions,
        "batch_size": args.batch_size,
        "tokens_per_row": {
            "mean": round(sum(lengths) / len(lengths), 1),
            "min": min(lengths),
            "max": max(lengths),
        },
        **padding_ratios(lengths, args.partitions, args.batch_size),
    }
    if args.time:
        import numpy as np
        import torch

        from spark_jobs.models.minilm import MODEL

        torch.set_num_threads(1)  # one core per model, as in a Spark Python worker or Triton instance
        infer = MODEL.load({"device": "cpu"})
        texts = np.array([t.encode("utf-8") for t in frame["text"]], dtype=np.object_).reshape(-1, 1)
        table, ordered = batches_in_both_orders(lengths, args.partitions, args.batch_size)
        infer(texts[table[0]])  # warm-up, counted in neither
        cpu = interleaved_cpu_seconds(lambda batch: infer(texts[batch]), table, ordered)
        result["model_cpu_s"] = cpu
        result["model_cpu_table_over_length_ordered"] = round(cpu["table_order"] / cpu["length_ordered"], 3)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
