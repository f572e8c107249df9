"""Run a real Dask computation on a muster cluster and check the answer.

Usage: python examples/compute.py tcp://SCHEDULER:PORT [N]

Squares 0..N-1 on the cluster's workers, sums them there as a tree of tasks,
and checks the total against the closed form. Prints the total and which
workers did the work.
"""

import sys
from collections import Counter

from dask import delayed
from distributed import Client, get_worker


def square(x):
    return x * x, get_worker().name


def tree_sum(values):
    while len(values) > 1:
        values = [delayed(sum)(values[i : i + 8]) for i in range(0, len(values), 8)]
    return values[0]


def main(address, n=10_000):
    with Client(address, timeout=60) as client:
        results = client.gather(client.map(square, range(n)))
        squares = [delayed(v) for v, _ in results]
        total = tree_sum(squares).compute()
        expected = (n - 1) * n * (2 * n - 1) // 6
        if total != expected:
            raise SystemExit(f"wrong answer: {total} != {expected}")
        by_worker = Counter(name for _, name in results)
        print(f"sum of squares below {n} = {total} (correct)")
        print(f"tasks per worker: {dict(sorted(by_worker.items()))}")
        return total


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
