"""How much of Table 1 re-derives test pairs from train pairs: the baselines on a whole closure.

The paper's test set is a random 15% of WordNet's *transitive closure*, so a test pair (u, v)
can often be composed from train pairs (u→w and w→v). Without any training, on the full noun
closure (82,115 nouns, 743,086 pairs; seconds), for the split of each preset given (default:
``paper``, the paper's random split, and ``paper_leakfree``, :func:`hrq.stages.data.leak_free_test`)
this prints the test size, the frequency and composition baselines' Recall@10 (overall,
``_nonfrequent``, ``_nonderivable``; :mod:`hrq.baselines`), the share of test pairs not
derivable from train, the share that are direct hypernyms (no noun between child and parent),
the test nouns left without any train relation, and the paper's Table 1 range beside them.
The splits are those of the data stage (:func:`hrq.stages.data.split_relations`, with the
preset's ``hierarchy.test_fraction``, ``split_seed`` and ``split``) on the same node ids.

    python benchmarks/closure_leak.py                         # needs WordNet 3.0 (see README)
    python benchmarks/closure_leak.py --root mammal.n.01      # the wordnet_mammal subtree
    python benchmarks/closure_leak.py --presets wordnet_mammal wordnet_mammal_leakfree --root mammal.n.01
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import sparse

from hrq.baselines import composition_baseline, frequency_baseline
from hrq.config import load_config
from hrq.stages.data import split_relations
from hrq.tables.paper import paper_values
from wordnet import closure  # benchmarks/wordnet.py: the pipeline's node ids (sorted synset names)


def direct_mask(relations: torch.Tensor, pairs: torch.Tensor) -> np.ndarray:
    """``bool [M]``: pairs of ``pairs [M, 2]`` with no node between child and parent in the
    closure ``relations [E, 2]`` (direct hypernyms, the closure's transitive reduction)."""
    n = int(relations.max()) + 1
    r = relations.numpy()
    c = sparse.csr_array((np.ones(len(r), dtype=np.int32), (r[:, 0], r[:, 1])), shape=(n, n))
    two_hops = c @ c
    p = np.array(pairs.numpy())
    return np.asarray(two_hops[p[:, 0], p[:, 1]]).ravel() == 0


def split_report(relations: torch.Tensor, hierarchy: dict) -> dict[str, float]:
    """One preset's split of ``relations`` and what the baselines score on it."""
    start = time.perf_counter()
    test_mask = split_relations(relations, hierarchy["test_fraction"], hierarchy["split_seed"],
                                hierarchy.get("split", "random")) == "test"
    split_seconds = time.perf_counter() - start
    train, test = relations[torch.from_numpy(~test_mask)], relations[torch.from_numpy(test_mask)]
    freq = frequency_baseline(train, test)
    comp = composition_baseline(train, test)
    children = np.unique(test[:, 0].numpy())
    return {
        "test pairs": int(test_mask.sum()), "test share": float(test_mask.mean()),
        "non-derivable share": comp["nonderivable_share"], "non-frequent share": freq["nonfrequent_share"],
        "direct-hypernym share": float(direct_mask(relations, test).mean()),
        "test nouns without train relation": int((~np.isin(children, train[:, 0].numpy())).sum()),
        **{f"frequency {m}": v for m, v in freq.items() if m.startswith("recall")},
        **{f"composition {m}": v for m, v in comp.items() if m.startswith("recall")},
        "split seconds": split_seconds, "seconds": time.perf_counter() - start,
    }


def paper_range() -> str:
    """The paper's Table 1 Recall@10, min–max over its grid, per method."""
    t1 = paper_values()
    t1 = t1[(t1["table"] == 1) & (t1["metric"] == "recall@10")]
    return ", ".join(f"{m.upper()} {g.min():.1%}–{g.max():.1%}" for m, g in t1.groupby("method")["value"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="a subtree's root synset, e.g. mammal.n.01 (default: the whole closure)")
    parser.add_argument("--presets", nargs="+", default=["paper", "paper_leakfree"],
                        help="presets of config.yaml whose hierarchy split to apply")
    args = parser.parse_args()
    start = time.perf_counter()
    n_nodes, relations = closure(args.root)
    print(f"closure{' under ' + args.root if args.root else ''}: {n_nodes:,} nouns, {relations.shape[0]:,} pairs "
          f"({time.perf_counter() - start:.0f} s to read)")
    reports = {}
    for preset in args.presets:
        h = load_config(preset=preset)["hierarchy"]
        name = f"{preset} ({h.get('split', 'random')}, {h['test_fraction']:g}, seed {h['split_seed']})"
        reports[name] = split_report(relations, h)
    width = max(len(k) for r in reports.values() for k in r)
    print(f"\n| {'':{width}} | " + " | ".join(reports) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * (len(n) + 2) for n in reports) + "|")
    for key in next(iter(reports.values())):
        cells = []
        for name, r in reports.items():
            v = r[key]
            text = f"{v:,}" if isinstance(v, int) else f"{v:.1f}" if "seconds" in key else f"{v:.1%}"
            cells.append(f"{text:>{len(name)}}")
        print(f"| {key:{width}} | " + " | ".join(cells) + " |")
    print(f"\npaper's Table 1 (WordNet, Recall@10 over its grid): {paper_range()}")


if __name__ == "__main__":
    main()
