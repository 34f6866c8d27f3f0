"""How the cost of `sockscope ls -tanp` grows with the number of sockets (goal: linearly).

    python bench/growth.py [--runs 5]

For 5k, 12.5k and 25k connection pairs: median wall time of `ss -tanp` and `sockscope ls
-tanp`, and the time per socket, which should stay flat.
"""

from __future__ import annotations

import argparse
import os
import sys

from ls import SOCKSCOPE, compile_bytecode, medians, peak_rss_mb
from pairs import hold_pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    compile_bytecode()
    print(f"{'sockets':>8} {'ss -tanp':>10} {'sockscope':>10} {'us/socket':>10} {'RSS MB':>7}")
    for pairs in (5000, 12500, 25000):
        with hold_pairs(pairs):
            times = medians({"ss": "ss -tanp", "ours": f"{SOCKSCOPE} ls -tanp"}, opts.runs)
            rss = peak_rss_mb([*SOCKSCOPE.split(), "ls", "-tanp"])
        per = times["ours"] / (2 * pairs) * 1e6
        print(f"{2 * pairs:>8} {times['ss'] * 1000:>9.0f}ms {times['ours'] * 1000:>9.0f}ms {per:>10.2f} {rss:>7.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    main()
