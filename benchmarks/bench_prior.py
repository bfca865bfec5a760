"""What the attribution prior costs: a demo training step with and without segment_share_penalty.

The demo's SmallCNN, AdamW, batches of 32 images of the demo's training split
(32x32): a plain cross-entropy step against one whose loss adds
``prior_weight * segment_share_penalty(...)`` on the watermark (gradient x
input of the log-probability, the demo's setting). Both are jitted and warmed
up; rounds of ``--steps`` steps alternate between the two (interleaved), and
the table shows the median time per step and the ratio. JSON goes to ``--out``.

Usage: python benchmarks/bench_prior.py [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sat_fast.demo.data import SEGMENT_NAMES, DataConfig, make_split
from sat_fast.demo.model import SmallCNN
from sat_fast.functional import segment_share_penalty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prior.json"))
    args = parser.parse_args()
    data = make_split(DataConfig(train_size=args.batch * args.steps), "train")
    net = SmallCNN(num_classes=3)
    params = net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    tx = optax.adamw(1e-3)
    watermark = SEGMENT_NAMES.index("watermark")

    def make_step(weight: float | None) -> Any:
        def loss_fn(p: Any, x: jax.Array, y: jax.Array, seg: jax.Array) -> jax.Array:
            loss = optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
            if weight is None:
                return loss
            penalty = segment_share_penalty(
                lambda im: net.apply(p, im), x, seg, num_segments=len(SEGMENT_NAMES), segment=watermark, targets=y
            )
            return loss + weight * penalty

        @jax.jit
        def step(p: Any, s: Any, x: jax.Array, y: jax.Array, seg: jax.Array) -> tuple[Any, Any, jax.Array]:
            loss, grads = jax.value_and_grad(loss_fn)(p, x, y, seg)
            updates, s = tx.update(grads, s, p)
            return optax.apply_updates(p, updates), s, loss

        return step

    steps = {"plain": make_step(None), "prior": make_step(20.0)}
    batches = [
        (
            jnp.asarray(data.images[i : i + args.batch]),
            jnp.asarray(data.label[i : i + args.batch].astype(np.int32)),
            jnp.asarray(data.segments[i : i + args.batch].astype(np.int32)),
        )
        for i in range(0, args.batch * args.steps, args.batch)
    ]
    state = {name: (params, tx.init(params)) for name in steps}
    for name, step in steps.items():  # compile and warm up
        jax.block_until_ready(step(*state[name], *batches[0]))
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            p, s = state[name]
            t0 = time.perf_counter()
            for batch in batches:
                p, s, loss = step(p, s, *batch)
            jax.block_until_ready(loss)
            times[name].append((time.perf_counter() - t0) / len(batches))
            state[name] = (p, s)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name in steps:
        print(f"{name:<6} {med[name] * 1e3:8.1f} ms/step")
    print(f"prior / plain: {med['prior'] / med['plain']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"batch": args.batch, "steps": args.steps, "repeats": args.repeats, "machine": platform.platform(),
            "cpus": os.cpu_count(), "jax": jax.__version__}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "median_s_per_step": med, "times": times}, indent=1))


if __name__ == "__main__":
    main()
