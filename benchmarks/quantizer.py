"""Forward+backward time of hrq's ResidualQuantizer (Euclidean, Poincaré) vs ResidualVQ, and of
every related quantizer kind (HG-Rec, HyperVQ, RSQ) relative to Euclidean RQ.

Prints one table with the ratios side by side. vector-quantize-pytorch is a bench-only
dependency (``pip install -e '.[bench]'``); it is run with gradient-trained codebooks
(``learnable_codebook=True, ema_update=False``), the setting that matches ours, and with its
default EMA codebook updates.

    python benchmarks/quantizer.py                # full grid of the core issue
    python benchmarks/quantizer.py --quick        # a smoke-sized grid
    python benchmarks/quantizer.py --device cuda  # on a GPU
    python benchmarks/quantizer.py --related-only # HG-Rec, HyperVQ, RSQ vs RQ/HRQ on one shape
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings

import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)

from hrq.manifold import poincare_ball  # noqa: E402
from hrq.quantize import QUANTIZER_KINDS, build_quantizer, codebook_label, pyramid_codebook_sizes  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(step, device: str, reps: int, min_seconds: float = 0.2) -> float:
    """Median seconds per call of ``step`` after two warm-up calls."""
    for _ in range(2):
        step()
    _sync(device)
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start_all < min_seconds and len(times) < 50):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ours(kind: str, n: int, h: int, s: int | list[int], k: int, device: str):
    """A forward+backward step of ``build_quantizer(kind, k, s, h)`` on ``n`` points (mapped
    onto the ball for the Poincaré kinds); ``s`` an int or one size per level."""
    q = build_quantizer(kind, k, s, h).to(device).train()
    x0 = torch.randn(n, h, device=device) * 0.3
    if q.geometry == "poincare":
        x0 = poincare_ball(1.0).expmap0(x0)

    def step():
        x = x0.clone().requires_grad_()
        out = q(x)
        (out.loss + out.quantized.sum()).backward()

    return step


def related_table(args) -> None:
    """Every quantizer kind of the pipeline on one shape, time and ratio to Euclidean RQ, with
    s per level and with HG-Rec's differential-length strategy ending at the same s (§3.2)."""
    n, h, s, k = args.related_shape
    pyramid = pyramid_codebook_sizes(max(s // 2 ** (k - 1), 1), k)
    label = codebook_label(pyramid)
    print(f"\nrelated quantizers, forward+backward, N={n} h={h} k={k}, s={s} and s={label}:\n")
    print(f"| kind | ms (s={s}) | / rq | ms (s={label}) | / rq (s={s}) |\n|---|---:|---:|---:|---:|")
    times = {}
    for kind in QUANTIZER_KINDS:
        times[kind] = tuple(_time(_ours(kind, n, h, sizes, k, args.device), args.device, args.reps)
                            for sizes in (s, pyramid))
        uniform, pyr = times[kind]
        print(f"| {kind} | {uniform * 1e3:.2f} | {uniform / times['rq'][0]:.2f} | {pyr * 1e3:.2f} | "
              f"{pyr / times['rq'][0]:.2f} |", flush=True)


def _residual_vq(n: int, h: int, s: int, k: int, device: str, ema: bool):
    from vector_quantize_pytorch import ResidualVQ

    opts = {} if ema else {"learnable_codebook": True, "ema_update": False}
    rvq = ResidualVQ(dim=h, num_quantizers=k, codebook_size=s, **opts).to(device).train()
    x0 = torch.randn(n, h, device=device) * 0.3

    def step():
        x = x0.clone().requires_grad_()
        quantized, _, commit = rvq(x)
        (commit.sum() + quantized.sum()).backward()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="N=1024 only, h=8/32, s=64, k=3")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--related-only", action="store_true", help="only the related-quantizer table")
    ap.add_argument("--related-shape", type=int, nargs=4, default=[4096, 32, 256, 3], metavar=("N", "h", "s", "k"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import vector_quantize_pytorch  # noqa: F401

        have_rvq = True
    except ImportError:
        have_rvq = False
        print("vector-quantize-pytorch not installed: ResidualVQ columns skipped (pip install -e '.[bench]')")

    torch.manual_seed(0)
    if args.related_only:
        print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__}")
        related_table(args)
        return
    ns = [1024] if args.quick else [1024, 4096, 16384]
    grid = itertools.product(ns, [8, 32], [64] if args.quick else [64, 256], [3] if args.quick else [3, 4])
    torch.manual_seed(0)
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__}")
    cols = ["N", "h", "s", "k", "euclid ms", "poincare ms", "poinc/eucl"]
    if have_rvq:
        cols += ["RVQ-grad ms", "RVQ-ema ms", "eucl/RVQ-grad", "eucl/RVQ-ema"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---:" for _ in cols) + "|")
    ratios_p, ratios_r = [], []
    for n, h, s, k in grid:
        te = _time(_ours("rq", n, h, s, k, args.device), args.device, args.reps)
        tp = _time(_ours("hrq", n, h, s, k, args.device), args.device, args.reps)
        row = [n, h, s, k, f"{te * 1e3:.2f}", f"{tp * 1e3:.2f}", f"{tp / te:.2f}"]
        ratios_p.append(tp / te)
        if have_rvq:
            tg = _time(_residual_vq(n, h, s, k, args.device, ema=False), args.device, args.reps)
            tm = _time(_residual_vq(n, h, s, k, args.device, ema=True), args.device, args.reps)
            row += [f"{tg * 1e3:.2f}", f"{tm * 1e3:.2f}", f"{te / tg:.2f}", f"{te / tm:.2f}"]
            ratios_r.append(te / tg)
        print("| " + " | ".join(str(v) for v in row) + " |", flush=True)
    geo = statistics.geometric_mean
    print(f"\ngeometric mean poincare/euclidean: {geo(ratios_p):.2f} (max {max(ratios_p):.2f})")
    if ratios_r:
        print(f"geometric mean euclidean/ResidualVQ(grad): {geo(ratios_r):.2f} (max {max(ratios_r):.2f})")
    related_table(args)


if __name__ == "__main__":
    main()
