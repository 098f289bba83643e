"""Shard 7 items over the processes of ``accelerate launch`` (or one plain process) and gather them back.

    accelerate launch --multi_gpu --num_processes 2 tests/unit/eval/shard_tiny.py --out two.json   # gloo on CPU
    python tests/unit/eval/shard_tiny.py --out one.json

Each rank tags its block with its rank; rank 0 writes the gathered lists (items, per-rank parts, numpy rows).
"""

import argparse
import json

import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from lab.eval import shard

    rank, size = shard.world()
    items = [f"q{i}" for i in range(7)]
    mine = shard.split(items)
    gathered = shard.gather([(x, rank) for x in mine])                                  # 7 (item, rank)
    mapped = shard.map_sharded(lambda xs: [x.upper() for x in xs], items)
    arr = shard.map_array(lambda xs: np.asarray([int(x[1:]) for x in xs], np.int64), items)         # [7]
    rows = shard.gather_parts(np.asarray([[int(x[1:]), rank] for x in mine], np.int64).reshape(-1, 2))
    if shard.is_main():
        with open(args.out, "w") as f:
            json.dump({"world": size, "gathered": gathered, "mapped": mapped, "array": arr.tolist(),
                       "rows": np.concatenate(rows).tolist(), "parts": [len(r) for r in rows]}, f)


if __name__ == "__main__":
    main()
