"""Encoding benchmark: text throughput against raw sentence-transformers, incremental cost, placeholder images.

`python -m rec_core.bench encode [--items N] [--repeats R] [--json PATH]`

- `text_encode_items_per_s`: items (product name + description) per second through `TextEncoder`
  (median over rounds), and `text_encode_ratio_vs_raw`: its speed over raw `SentenceTransformer.encode`
  (default arguments, normalized) on the same texts in the same process: the median of paired
  per-chunk time ratios, the two encoding each chunk back to back in alternating order.
- `incremental_cost_ratio`: a re-materialization of the item text table where `--changed-fraction`
  of items changed (read the previous parquet, encode the changed rows, write) over a full one
  (encode all, write), both checkpointing as the asset does. Model loading is excluded from both.
- `checkpoint_overhead_ratio`: the checkpointed full materialization over one without checkpoints
  (chunked encoding plus the part files a kill would leave).
- `placeholder_images_per_s`: placeholder product cards drawn and written (atomically) per second.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from rec_core import storage
from rec_core.bench.common import median, timed_runs
from rec_core.embeddings import Checkpoint, embedding_table, read_previous, text_embeddings

TEXT_COLUMNS = {"name_embedding": "product_name", "description_embedding": "about_product"}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rec_core.bench encode")
    parser.add_argument("--items", type=int, default=1000, help="synthetic items whose texts are encoded")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (medians reported)")
    parser.add_argument("--chunk", type=int, default=250, help="texts per interleaved throughput measurement")
    parser.add_argument(
        "--changed-fraction", type=float, default=0.01, help="share of items changed before re-materializing"
    )
    parser.add_argument("--images", type=int, default=300, help="placeholder images drawn per timed run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run(argv: list[str]) -> dict[str, float]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from rec_core.encoders import TextEncoder, TextEncoderConfig
    from rec_core.generation.generate_images import generate_images
    from rec_core.generation.synthetic import GeneratorConfig, generate_dataset

    args = _parse(argv)
    n_users = max(1, args.items // 5)
    items = generate_dataset(
        GeneratorConfig(n_users=n_users, n_items=args.items, n_interactions=3 * n_users, seed=args.seed)
    ).items
    texts = {column: items[source].tolist() for column, source in TEXT_COLUMNS.items()}
    all_texts = [t for values in texts.values() for t in values]

    encoder = TextEncoder(TextEncoderConfig(device=args.device))
    raw = SentenceTransformer(encoder.model_path, device=encoder.device)
    encoder.encode(all_texts[:64]), raw.encode(all_texts[:64])  # warm-up: lazy loading and first-call allocations

    # Both variants encode the same chunks back to back, alternating which goes first, so load from
    # other processes on a shared machine falls on both alike; each round's chunk times are summed.
    chunks = [all_texts[start : start + args.chunk] for start in range(0, len(all_texts), args.chunk)]
    ours_s, raw_s, paired_ratios = [], [], []
    for _ in tqdm(range(args.repeats), desc="text throughput", unit="round"):
        round_s = {"raw": 0.0, "ours": 0.0}
        for index, chunk in enumerate(chunks):
            variants = [
                ("raw", lambda chunk=chunk: raw.encode(chunk, normalize_embeddings=True)),
                ("ours", lambda chunk=chunk: encoder.encode(chunk)),
            ]
            chunk_s = {
                name: timed_runs(encode, 1)[0] for name, encode in (variants if index % 2 == 0 else variants[::-1])
            }
            paired_ratios.append(chunk_s["raw"] / chunk_s["ours"])
            for name, seconds in chunk_s.items():
                round_s[name] += seconds
        raw_s.append(round_s["raw"])
        ours_s.append(round_s["ours"])

    with tempfile.TemporaryDirectory() as tmp:
        full_path, incremental_path = Path(tmp) / "full.parquet", Path(tmp) / "incremental.parquet"

        checkpoint = Checkpoint(Path(tmp) / "checkpoints")  # the assets' defaults

        def full(checkpointed: bool = True) -> None:
            update = text_embeddings(
                "item_id", items["item_id"], texts, encoder, checkpoint=checkpoint if checkpointed else None
            )
            storage.write_parquet(embedding_table(update.table, list(texts), update.dimension), full_path)

        rng = np.random.default_rng(args.seed)
        changed = rng.choice(len(items), size=max(1, round(args.changed_fraction * len(items))), replace=False)
        edited = {column: list(values) for column, values in texts.items()}
        for row in changed:
            edited["description_embedding"][row] += " Updated listing."
        encoded_counts = []

        def incremental() -> None:
            update = text_embeddings(
                "item_id", items["item_id"], edited, encoder, previous=read_previous(full_path), checkpoint=checkpoint
            )
            storage.write_parquet(embedding_table(update.table, list(edited), update.dimension), incremental_path)
            encoded_counts.append(update.encoded)

        # Plain and checkpointed full runs alternate, so machine load falls on both alike.
        plain_full_s, full_s = [], []
        for repeat in range(args.repeats):
            variants = [(plain_full_s, lambda: full(checkpointed=False)), (full_s, full)]
            for times, materialize in variants if repeat % 2 == 0 else variants[::-1]:
                times.extend(timed_runs(materialize, 1))
        incremental_s = timed_runs(incremental, args.repeats)
        if set(encoded_counts) != {len(changed)}:
            raise RuntimeError(f"the incremental runs encoded {encoded_counts} rows, expected {len(changed)} each")

        image_rates = []
        for run_index in range(args.repeats):
            report = generate_images(items.head(args.images), Path(tmp) / f"images-{run_index}")
            image_rates.append(report.images_per_s)

    unique_fraction = len(set(all_texts)) / len(all_texts)
    return {
        "text_encode_items_per_s": len(items) / median(ours_s),
        "text_encode_raw_items_per_s": len(items) / median(raw_s),
        "text_encode_ratio_vs_raw": median(paired_ratios),
        "text_unique_fraction": unique_fraction,
        "text_full_materialize_s": median(full_s),
        "text_incremental_materialize_s": median(incremental_s),
        "incremental_cost_ratio": median(incremental_s) / median(full_s),
        "text_full_materialize_no_checkpoint_s": median(plain_full_s),
        "checkpoint_overhead_ratio": median(full_s) / median(plain_full_s),
        "incremental_changed_items": float(len(changed)),
        "placeholder_images_per_s": median(image_rates),
        "items": float(len(items)),
    }
