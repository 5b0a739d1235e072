"""The id puzzle's costs: an honest server's one-time grinding and an eclipse attacker's.

- ``try_us``: one try as ``Identity.generate_meeting`` makes it (random seed ->
  Ed25519 key -> verify key -> node id -> puzzle hash), microseconds; the anchor
  is ``Identity.generate`` alone (what every key costs without the puzzle);
- grinding ``--identities`` server identities at ``--bits``: p50/p95/max seconds
  each (geometric: the mean is 2**bits tries, the tail long);
- from ``try_us``: an attacker's 20 ids sharing 12 leading bits with a key (finding
  3 of issue 10) cost 20 x 2**12 tries without the puzzle, 20 x 2**(12 + bits) with
  it, in core-seconds on this machine's one core.

    flock /tmp/bench.lock .venv/bin/python benchmarks/id_puzzle.py [--bits 16] [--identities 8]

Figures are indicative on a shared 2-core machine. LAST line: one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import percentile, print_final_json, print_table
from p2pnode.dht.puzzle import DEFAULT_ID_DIFFICULTY
from p2pnode.identity import Identity

SYBILS = 20
SHARED_BITS = 12  # finding 3 of issue 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=DEFAULT_ID_DIFFICULTY)
    parser.add_argument("--identities", type=int, default=8, help="server identities ground")
    parser.add_argument("--tries", type=int, default=20000, help="tries timed for try_us")
    args = parser.parse_args()

    began = time.perf_counter()
    for _ in range(args.tries):
        Identity.generate()
    plain_us = (time.perf_counter() - began) / args.tries * 1e6
    # The puzzle's try, timed over a fixed count: grind for an impossible 64 bits with a
    # seed source that ends the loop after ``args.tries`` tries.
    seeds_left = args.tries

    def seeds(size: int) -> bytes:
        nonlocal seeds_left
        seeds_left -= 1
        if seeds_left < 0:
            raise StopIteration
        return os.urandom(size)

    began = time.perf_counter()
    with contextlib.suppress(StopIteration):
        Identity.generate_meeting(64, seeds=seeds)
    try_us = (time.perf_counter() - began) / args.tries * 1e6

    seconds: list[float] = []
    for _ in range(args.identities):
        began = time.perf_counter()
        Identity.generate_meeting(args.bits)
        seconds.append(time.perf_counter() - began)
    mean_s = sum(seconds) / len(seconds)
    expected_s = 2**args.bits * try_us / 1e6
    plain_attack = SYBILS * 2**SHARED_BITS * try_us / 1e6
    puzzle_attack = SYBILS * 2 ** (SHARED_BITS + args.bits) * try_us / 1e6
    print_table(
        ["figure", "value"],
        [
            ["Identity.generate (anchor), us", f"{plain_us:.1f}"],
            ["one puzzle try, us", f"{try_us:.1f}"],
            [f"grind at {args.bits} bits, expected s", f"{expected_s:.2f}"],
            [f"grind at {args.bits} bits, mean s ({args.identities})", f"{mean_s:.2f}"],
            [
                "  p50 / p95 / max s",
                " / ".join(f"{percentile(seconds, q) or 0.0:.2f}" for q in (50, 95, 100)),
            ],
            [
                f"attack: {SYBILS} ids x {SHARED_BITS} bits, no puzzle, core-s",
                f"{plain_attack:.1f}",
            ],
            [f"attack with {args.bits} puzzle bits, core-hours", f"{puzzle_attack / 3600:.1f}"],
        ],
    )
    print_final_json(
        {
            "bits": args.bits,
            "identities": args.identities,
            "generate_us": round(plain_us, 2),
            "try_us": round(try_us, 2),
            "grind_expected_s": round(expected_s, 3),
            "grind_mean_s": round(mean_s, 3),
            "grind_p50_s": round(percentile(seconds, 50) or 0.0, 3),
            "grind_p95_s": round(percentile(seconds, 95) or 0.0, 3),
            "grind_max_s": round(max(seconds), 3),
            "attack_plain_core_s": round(plain_attack, 2),
            "attack_puzzle_core_h": round(puzzle_attack / 3600, 2),
            "ratio_attack_puzzle_vs_plain": 2**args.bits,
        }
    )


if __name__ == "__main__":
    main()
