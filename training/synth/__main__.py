"""CLI: ``python -m training.synth --out DIR [--version V] [--scenes N] [--seed S] [--stats]``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from training.synth.writer import generate_world


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 600.0:
        raise argparse.ArgumentTypeError(f"must be within [1, 600] seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the synthetic-world CLI."""
    p = argparse.ArgumentParser(prog="python -m training.synth",
                                description="Write a synthetic nuScenes-format world (LiDAR + 5 radars).")
    p.add_argument("--out", required=True,
                   help="dataroot to write (empty, new, or a previous synthetic world)")
    p.add_argument("--version", default="v1.0-synth", help="table folder name (default v1.0-synth)")
    p.add_argument("--scenes", type=_positive_int, default=2, help="number of scenes (default 2)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--scene-seconds", type=_seconds, default=20.0,
                   help="scene length in seconds (default 20)")
    p.add_argument("--stats", action="store_true", help="print radar-likeness statistics afterwards")
    p.add_argument("--stats-samples", type=_positive_int, default=None,
                   help="key frames used by --stats (default: all)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty directory that is not a synthetic world (replaces its "
                        "samples/, sweeps/, maps/ and <version>/; other files stay)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        root = generate_world(args.out, version=args.version, scenes=args.scenes, seed=args.seed,
                              scene_seconds=args.scene_seconds, show_progress=not args.no_progress,
                              overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.scenes} scene(s) to {root} ({args.version}) in {time.perf_counter() - t0:.1f} s")
    if args.stats:
        from training.synth.stats import compute_stats, format_stats

        stats = compute_stats(root, args.version, max_samples=args.stats_samples)
        print(format_stats(stats))
        print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
