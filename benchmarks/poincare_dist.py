"""Forward+backward time of the Poincaré distance: geoopt's ``PoincareBall.dist`` vs hrq's fused
``poincare_distance`` vs the Euclidean distance, at the hierarchy tokenizer's relation-loss shapes
(a child ``[..., 1, h]`` against ``1 + M`` candidates ``[..., 1 + M, h]``, broadcasting).

Prints the load average first (timings on a shared machine are only as good as it is idle),
then one table with the ratios side by side. The three are timed in interleaved rounds, so a
burst of load hits all of them alike; each cell is the median over rounds.

    python benchmarks/poincare_dist.py                # float32 on the CPU
    python benchmarks/poincare_dist.py --rounds 100   # quicker
    python benchmarks/poincare_dist.py --device cuda  # on a GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)

from hrq.manifold import poincare_ball, poincare_distance  # noqa: E402

SHAPES = [((50, 1, 32), (50, 51, 32)), ((8, 50, 1, 32), (8, 50, 51, 32))]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _methods(curvature: float) -> dict:
    ball = poincare_ball(curvature)
    return {
        "geoopt": lambda a, b: ball.dist(a, b),
        "poincare_distance": lambda a, b: poincare_distance(a, b, curvature),
        "euclidean": lambda a, b: (a - b).pow(2).sum(-1).clamp_min(1e-15).sqrt(),
    }


def _points(shape, curvature: float, dtype, device: str, generator) -> torch.Tensor:
    """Points of the ball, ``exp0`` of tangent vectors with entries ~ N(0, 0.3^2)."""
    v = torch.randn(shape, generator=generator, dtype=dtype) * 0.3
    return poincare_ball(curvature).expmap0(v).to(device).requires_grad_()


def time_shapes(x_shape, y_shape, args) -> dict[str, float]:
    """Median seconds of ``torch.autograd.grad(f(x, y).sum(), (x, y))`` per method."""
    g = torch.Generator().manual_seed(0)
    x = _points(x_shape, args.curvature, args.dtype, args.device, g)
    y = _points(y_shape, args.curvature, args.dtype, args.device, g)
    methods = _methods(args.curvature)

    def step(f):
        torch.autograd.grad(f(x, y).sum(), (x, y))

    for f in methods.values():  # warm-up (geoopt's TorchScript compiles on its first calls)
        for _ in range(5):
            step(f)
    _sync(args.device)
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            t0 = time.perf_counter()
            step(methods[name])
            _sync(args.device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--curvature", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=300)
    args = p.parse_args()
    args.dtype = getattr(torch, args.dtype)

    one, five, fifteen = os.getloadavg()
    print(f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}  ({os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, {args.device}, "
          f"{str(args.dtype).removeprefix('torch.')}, c={args.curvature}, {args.rounds} rounds)")
    print("\nforward+backward, median ms:\n")
    print("| x | y | geoopt | poincare_distance | euclidean | geoopt / ours | ours / euclidean "
          "| geoopt / euclidean |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for x_shape, y_shape in SHAPES:
        t = time_shapes(x_shape, y_shape, args)
        geo, ours, euc = t["geoopt"], t["poincare_distance"], t["euclidean"]
        print(f"| {list(x_shape)} | {list(y_shape)} | {geo * 1e3:.3f} | {ours * 1e3:.3f} | "
              f"{euc * 1e3:.3f} | {geo / ours:.2f} | {ours / euc:.2f} | {geo / euc:.2f} |")


if __name__ == "__main__":
    main()
