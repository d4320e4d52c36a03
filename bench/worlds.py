"""The world a benchmark runs on: an existing folder (--world), or one generated for the run."""

from __future__ import annotations

import argparse
from pathlib import Path

from datafirst.world import generate_world

SEED = 2026
PEOPLE = 348_000  # about 1M source records


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world", type=Path, help="an existing world folder")
    parser.add_argument("--people", type=int, default=PEOPLE,
                        help="people in a generated world (348k = ~1M records)")


def world_for(args: argparse.Namespace, tmp: Path) -> Path:
    """`--world`, or a world of `--people` generated (seed 2026) under `tmp`."""
    if args.world is not None:
        return args.world
    world = Path(tmp) / "world"
    generate_world(world, args.people, seed=SEED)
    return world
