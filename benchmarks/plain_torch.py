"""Path 1: the model in one plain Python process, no Spark, no Triton (the machine's limit).

Run by :mod:`benchmarks.bench` as its own process (so its memory is measured alone); prints nothing
but writes one JSON result. Uses the same infer function the Triton server runs (``--model``'s
``load``: sentence-transformers for MiniLM, transformers' ``generate`` for an ``hf:`` generation
model), on the same Delta input, in batches of ``--batch-size``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

START = time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True, help="Delta table of documents (id, text, date)")
    parser.add_argument("--model", default="spark_jobs.models.minilm:MODEL")
    parser.add_argument("--model-options", default="{}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--check-ids", default="", help="comma-separated ids whose embeddings to return")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import numpy as np
    from deltalake import DeltaTable

    from spark_jobs.models.references import resolve_model

    started = time.monotonic()
    frame = DeltaTable(args.input).to_pandas(columns=["id", "text"]).sort_values("id")
    read_s = time.monotonic() - started
    texts = np.array([t.encode("utf-8") for t in frame["text"]], dtype=np.object_).reshape(-1, 1)

    import torch

    model = resolve_model(args.model)
    path_start = time.monotonic()
    infer = model.load(json.loads(args.model_options))
    load_s = time.monotonic() - path_start
    infer(texts[:1])
    first_row_s = time.monotonic() - path_start
    infer(texts[: args.batch_size])  # warm-up: same as the Spark paths' warm-up batch

    timed_start_epoch = time.time()
    started = time.monotonic()
    rows = 0
    for i in range(0, len(texts), args.batch_size):
        out = infer(texts[i : i + args.batch_size])[model.output.name]
        rows += len(out)
    infer_s = time.monotonic() - started
    timed_end_epoch = time.time()

    ids = [int(i) for i in args.check_ids.split(",") if i]
    positions = [int(np.flatnonzero(frame["id"].to_numpy() == i)[0]) for i in ids]
    check = infer(texts[positions])[model.output.name] if positions else np.zeros((0, 1))
    result = {
        "path": "plain_torch",
        "rows": rows,
        "infer_s": round(infer_s, 3),
        "rows_per_s": round(rows / infer_s, 1),
        "model_load_s": round(load_s, 3),
        "time_to_first_row_s": round(first_row_s, 3),
        "process_start_to_first_row_s": round(path_start - START + first_row_s, 3),
        "delta_read_s": round(read_s, 3),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "timed_start_epoch": timed_start_epoch,
        "timed_end_epoch": timed_end_epoch,
        "check": {str(i): v if isinstance(v, str) else v.tolist() for i, v in zip(ids, check, strict=True)},
        "pid": os.getpid(),
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
