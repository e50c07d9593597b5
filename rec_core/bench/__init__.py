"""Benchmarks: `python -m rec_core.bench NAME [--json PATH] [options]`.

Each benchmark is a module `rec_core.bench.<name>` with `run(argv: list[str]) -> dict[str, float]`,
returning a flat mapping of snake_case metric names (unit in the name) to numbers.
"""

BENCHMARKS = ("datagen", "encode", "quality", "train", "serving", "service", "feast", "pipeline", "scale")
