"""RegMix on the shared corpus with n-gram proxies: does the regression's mixture beat the baselines?

One run: sample `--n-train` (256) + `--n-eval` (64) RegMix mixtures over the corpus domains,
train one byte 5-gram Kneser-Ney proxy per mixture (as Ray tasks through
`Data.map_tasks`, or in-process with `--local`), fit LightGBM (and the linear
baseline) on the training runs, report Spearman/Pearson on the held-out runs, search 100,000
candidates, then train fresh proxies (new seeds, `--repeats` each) on the chosen, uniform, natural
(token share) and best-observed training mixtures and print their measured target losses and ratios.

    .venv/bin/python benchmarks/bench_regmix.py                 # defaults as in docs/regmix.md
    .venv/bin/python benchmarks/bench_regmix.py --local --n-train 32 --n-eval 16 --budget 300000
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tamis.mixers import proxy_runs as pr  # noqa: E402
from tamis.mixers.mixture_design import sample_mixtures  # noqa: E402
from tamis.mixers.regmix import RegMixRegressor  # noqa: E402


def load_corpus(corpus: Path, docs_per_file: int) -> pl.DataFrame:
    files = sorted(glob.glob(str(corpus / "*.parquet")))
    return pl.concat([pl.scan_parquet(f).select("id", "text", "domain").head(docs_per_file).collect()
                      for f in files])


def measure(pools, valid, weights: dict, args, seeds) -> np.ndarray:
    """Target loss of fresh proxies trained on `weights`, one per seed: (len(seeds), n_targets)."""
    return np.array([[pr.run_mixture(0, weights, pools, valid, token_budget=args.budget, seed=s,
                                     params={"order": args.order})["losses"][t] for t in valid]
                     for s in seeds])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=ROOT / ".." / "shared" / "corpus")
    ap.add_argument("--docs-per-file", type=int, default=400)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-eval", type=int, default=64)
    ap.add_argument("--budget", type=int, default=500_000, help="training bytes per proxy")
    ap.add_argument("--order", type=int, default=5)
    ap.add_argument("--targets", default="all,literature+religion+speeches")
    ap.add_argument("--repeats", type=int, default=3, help="fresh proxies per compared mixture")
    ap.add_argument("--candidates", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--local", action="store_true", help="no Ray: train proxies in this process")
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    ap.add_argument("--csv-dir", type=Path, help="also write the proxy runs as RegMix CSVs here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    df = load_corpus(args.corpus.resolve(), args.docs_per_file)
    pools = pr.build_pools(df, pool_tokens=args.budget, valid_tokens=60_000, seed=args.seed)
    names = args.targets.split(",")
    valid = pr.targets(pools, names, all_tokens=60_000)
    domains, natural = pools.domains, np.array([pools.natural[d] for d in pools.domains])
    print(f"{df.height} documents, {len(domains)} domains; natural share: "
          + ", ".join(f"{d} {w:.3f}" for d, w in zip(domains, natural)))
    print(f"prepared in {time.perf_counter() - t0:.1f} s")

    M = sample_mixtures(natural, args.n_train + args.n_eval, seed=args.seed)
    runner = pr.local_runner if args.local else None
    t1 = time.perf_counter()
    mix, loss = pr.run_proxies(M, pools, valid, token_budget=args.budget, seed=args.seed,
                               params={"order": args.order}, runner=runner)
    proxy_wall = time.perf_counter() - t1
    print(f"{len(M)} proxies in {proxy_wall:.1f} s wall ({loss['seconds'].mean():.2f} s each, "
          f"{'in-process' if args.local else 'Ray tasks'})")

    if args.csv_dir:   # the study in RegMix's CSV layout, for `tamis mix fit` or other regressions
        k = args.n_train
        pr.write_csvs(mix.head(k), loss.head(k), args.csv_dir / "mixtures.csv", args.csv_dir / "losses.csv")
        pr.write_csvs(mix.tail(args.n_eval), loss.tail(args.n_eval), args.csv_dir / "eval_mixtures.csv",
                      args.csv_dir / "eval_losses.csv")
        pr.save_prior(pools, args.csv_dir / "prior.json")
    X_tr, X_ev = M[:args.n_train], M[args.n_train:]
    results = {"proxies": len(M), "proxy_wall_s": proxy_wall, "proxy_mean_s": loss["seconds"].mean(),
               "budget": args.budget, "order": args.order, "targets": {}}
    seeds = [10_000 + i for i in range(args.repeats)]
    for t in names:
        y = loss[pr.loss_column(t)].to_numpy()
        y_tr, y_ev = y[:args.n_train], y[args.n_train:]
        row = {}
        for model in ("lightgbm", "linear"):
            reg = RegMixRegressor(model=model, seed=args.seed).fit(X_tr, y_tr, domains=domains)
            q = reg.score(X_ev, y_ev) if args.n_eval >= 3 else {"spearman": float("nan"), "pearson": float("nan")}
            t2 = time.perf_counter()
            mixture = reg.search(n_candidates=args.candidates, prior=dict(zip(domains, natural)), seed=args.seed)
            row[model] = {**q, "mixture": mixture, "search_s": time.perf_counter() - t2,
                          "predicted": reg.predicted_loss_, "rounds": reg.best_iteration_}
        compare = {"regmix (lightgbm)": row["lightgbm"]["mixture"], "regmix (linear)": row["linear"]["mixture"],
                   "uniform": dict(zip(domains, np.full(len(domains), 1 / len(domains)))),
                   "natural": dict(zip(domains, natural)),
                   "best training mixture": dict(zip(domains, X_tr[int(np.argmin(y_tr))]))}
        ti = list(valid).index(t)
        measured = {k: float(measure(pools, valid, w, args, seeds)[:, ti].mean()) for k, w in compare.items()}
        print(f"\ntarget {t}: LightGBM Spearman {row['lightgbm']['spearman']:.3f} Pearson "
              f"{row['lightgbm']['pearson']:.3f}; linear Spearman {row['linear']['spearman']:.3f} "
              f"Pearson {row['linear']['pearson']:.3f} (on {args.n_eval} held-out mixtures)")
        base = measured["regmix (lightgbm)"]
        for k, v in measured.items():
            print(f"  {k:<24} loss {v:.4f} nats/byte   regmix/this {base / v:.4f}")
        print("  regmix mixture: " + ", ".join(f"{d} {w:.3f}" for d, w in
                                                sorted(row["lightgbm"]["mixture"].items(), key=lambda kv: -kv[1]) if w >= 0.005))
        results["targets"][t] = {"regression": {m: {k: v for k, v in r.items()} for m, r in row.items()},
                                 "measured_loss": measured, "observed_train_min": float(y_tr.min())}
    results["total_s"] = time.perf_counter() - t0
    print(f"\ntotal {results['total_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
