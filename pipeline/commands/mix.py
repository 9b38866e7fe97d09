"""`tamis mix fit | proxies | apply`: the RegMix regression mixer (see docs/regmix.md).

  tamis mix proxies INPUT --out DIR [--n-mixtures 64 --n-eval 16 --kind ngram --token-budget N]
  tamis mix fit --mixtures M.csv --losses L.csv --target COLUMN [--eval-mixtures M2.csv
                --eval-losses L2.csv] [--model lightgbm|linear] [--prior prior.json] [--json]
  tamis mix apply RUN_DIR_OR_PARQUET --mixture MIX.json --tokens N --out DIR [--max-epochs 4]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("mix", help="RegMix: train proxies on mixtures, fit mixture->loss, apply a mixture")
    mix = p.add_subparsers(dest="mix_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    f = mix.add_parser("fit", help="fit mixture->loss regression, report correlation, search the best mixture")
    f.add_argument("--mixtures", required=True, type=Path, help="mixture CSV (index + one weight column per domain)")
    f.add_argument("--losses", required=True, type=Path, help="loss CSV (index + one loss column per target)")
    f.add_argument("--target", required=True, help="loss column (or target name for metric/<name>_val_loss)")
    f.add_argument("--eval-mixtures", type=Path, help="held-out mixture CSV for Spearman/Pearson")
    f.add_argument("--eval-losses", type=Path, help="held-out loss CSV (with --eval-mixtures)")
    f.add_argument("--model", choices=("lightgbm", "linear"), default="lightgbm",
                   help="mixture->loss regression (default lightgbm)")
    f.add_argument("--prior", type=Path, help="natural token share (prior.json from `mix proxies`, or "
                   "{domain: share}); centres the candidate mixtures and sets the 15x epoch bound")
    f.add_argument("--candidates", type=int, default=100_000, help="simulated mixtures (default 100000)")
    f.add_argument("--top-k", type=int, default=128, help="average of the best k candidates (default 128)")
    f.add_argument("--folds", type=int, default=5, help="k-fold when no eval files are given (default 5)")
    f.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    f.add_argument("--out", type=Path, help="also write the JSON result to this file")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(func=run_fit)

    r = mix.add_parser("proxies", help="sample mixtures, train one proxy per mixture (Ray tasks), write the CSVs")
    r.add_argument("input", type=Path, help="Parquet file or folder, or a run folder (uses curated/)")
    r.add_argument("--out", required=True, type=Path, help="folder for mixtures.csv, losses.csv, prior.json")
    r.add_argument("--n-mixtures", type=int, default=64, help="training mixtures (RegMix: 512)")
    r.add_argument("--n-eval", type=int, default=0, help="extra held-out mixtures (eval_*.csv)")
    r.add_argument("--kind", choices=("ngram", "gpt2"), default="ngram",
                   help="proxy model: n-gram LM or small GPT-2 (default ngram)")
    r.add_argument("--token-budget", type=int, default=1_000_000, help="training tokens per proxy")
    r.add_argument("--targets", default=None, help="comma list: 'all', a domain, or domains joined by '+' "
                   "(default: all and every domain)")
    r.add_argument("--domain-column", default="domain", help="column naming each document's domain (default domain)")
    r.add_argument("--tokenizer", default=None, help="tokenizer.json or folder (default: UTF-8 bytes)")
    r.add_argument("--valid-fraction", type=float, default=0.05,
                   help="share of each domain held out for the proxies' losses (default 0.05)")
    r.add_argument("--order", type=int, default=5, help="n-gram order (ngram proxies)")
    r.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    r.add_argument("--local", action="store_true", help="run proxies in this process instead of Ray tasks")
    r.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per proxy task (gpt2)")
    r.set_defaults(func=run_proxies)

    a = mix.add_parser("apply", help="write the output to a token budget following a mixture")
    a.add_argument("input", type=Path, help="Parquet file or folder, or a run folder (uses curated/)")
    a.add_argument("--mixture", required=True, type=Path, help="mixture JSON (`mix fit --json` output or a dict)")
    a.add_argument("--tokens", required=True, type=float, help="token budget")
    a.add_argument("--out", required=True, type=Path, help="folder to write the mixed Parquet to")
    a.add_argument("--max-epochs", type=float, default=4.0, help="repeat cap per domain (default 4)")
    a.add_argument("--on-cap", choices=("redistribute", "shrink"), default="redistribute",
                   help="a domain at --max-epochs: give its missing tokens to the others, or shrink the "
                        "output (default redistribute)")
    a.add_argument("--tokenizer", default=None, help="'bytes' (default), 'whitespace', or a tokenizer path")
    a.add_argument("--domain-column", default="domain", help="column naming each document's domain (default domain)")
    a.add_argument("--seed", type=int, default=0, help="seed of the document sampling (default 0)")
    a.set_defaults(func=run_apply)


def _err(msg: str) -> int:
    print(f"tamis: error: {msg}", file=sys.stderr)
    return 2


def _load_prior(path: Path | None) -> dict | None:
    if path is None:
        return None
    raw = json.loads(path.read_text())
    return raw.get("prior", raw) if isinstance(raw, dict) else raw


def _joined(mix_path, loss_path, target, domains=None):
    from tamis.mixers import proxy_runs as pr
    mix, loss = pr.read_table(mix_path, "mixture"), pr.read_table(loss_path, "loss")
    col = pr.resolve_target(loss.columns, target, loss_path)
    j = pr.join(mix, loss, col, domains, names=(str(mix_path), str(loss_path)))
    for what, rows, where in (("only in", j.only_mixtures, mix_path), ("only in", j.only_losses, loss_path)):
        if rows:
            print(f"tamis mix: {len(rows)} row(s) {what} {where} skipped (index {_short(rows)})", file=sys.stderr)
    if j.missing_target:
        print(f"tamis mix: {len(j.missing_target)} row(s) of {loss_path} have no {col!r} value, skipped "
              f"(index {_short(j.missing_target)})", file=sys.stderr)
    return j, col


def _short(rows: list, n: int = 10) -> str:
    return ", ".join(map(str, rows[:n])) + (", ..." if len(rows) > n else "")


def run_fit(args) -> int:
    from tamis.mixers import proxy_runs as pr
    from tamis.mixers.regmix import RegMixRegressor, cross_validate

    if (args.eval_mixtures is None) != (args.eval_losses is None):
        return _err("--eval-mixtures and --eval-losses go together")
    try:
        train, col = _joined(args.mixtures, args.losses, args.target)
        if len(train.y) < 2:
            return _err(f"{args.mixtures} / {args.losses}: {len(train.y)} rows joined on 'index'; need >= 2")
        domains = list(train.X.columns)
        if args.eval_mixtures:
            ev, _ = _joined(args.eval_mixtures, args.eval_losses, args.target, domains)
    except (pr.CsvError, ValueError) as e:
        return _err(str(e))
    reg = RegMixRegressor(model=args.model, seed=args.seed).fit(train.X, train.y)
    if args.eval_mixtures:
        quality, how, n_eval = reg.score(ev.X, ev.y), "eval files", len(ev.y)
    else:
        quality = cross_validate(train.X, train.y, k=args.folds, seed=args.seed, model=args.model)
        how, n_eval = f"{min(args.folds, len(train.y))}-fold", len(train.y)
    prior = _load_prior(args.prior)
    try:
        mixture = reg.search(n_candidates=args.candidates, top_k=args.top_k, prior=prior, seed=args.seed)
    except ValueError as e:
        return _err(str(e))
    out = {"target": col, "model": args.model, "n_train": len(train.y), "n_eval": n_eval,
           "evaluation": how, "spearman": quality["spearman"], "pearson": quality["pearson"],
           "best_iteration": reg.best_iteration_, "n_candidates": reg.candidates_, "top_k": args.top_k,
           "predicted_loss": reg.predicted_loss_, "mixture": mixture,
           "baselines_predicted": _baselines(reg, prior),
           "skipped": {"only_mixtures": train.only_mixtures, "only_losses": train.only_losses,
                       "missing_target": train.missing_target}}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"target {col}: {len(train.y)} training mixtures, model {args.model}"
          + (f" ({reg.best_iteration_} rounds)" if reg.best_iteration_ else ""))
    print(f"regression on {n_eval} {'held-out' if args.eval_mixtures else 'out-of-fold'} mixtures ({how}): "
          f"Spearman {quality['spearman']:.4f}  Pearson {quality['pearson']:.4f}")
    print(f"searched {reg.candidates_} candidates, averaged the best {args.top_k}; "
          f"predicted loss {reg.predicted_loss_:.4f}")
    for name, v in out["baselines_predicted"].items():
        print(f"  predicted loss of the {name} mixture: {v:.4f}")
    print("mixture:")
    for d, w in sorted(mixture.items(), key=lambda kv: -kv[1]):
        print(f"  {d:<30} {w:.4f}")
    return 0


def _baselines(reg, prior) -> dict[str, float]:
    import numpy as np
    k = len(reg.domains_)
    out = {"uniform": float(reg.predict(np.full((1, k), 1.0 / k))[0])}
    if prior:
        p = np.array([float(prior.get(d, 0.0)) for d in reg.domains_])
        if p.sum() > 0:
            out["natural"] = float(reg.predict((p / p.sum())[None, :])[0])
    return out


def run_proxies(args) -> int:
    import polars as pl
    from tamis.mixers import proxy_runs as pr
    from tamis.mixers.mixture_design import sample_mixtures
    from tamis.pipeline.readers import read_documents
    from tamis.pipeline.runner.session import map_tasks

    try:
        df = pl.from_arrow(read_documents(args.input, columns=["id", "text", args.domain_column]))
        pools = pr.build_pools(df, domain_column=args.domain_column, tokenizer=args.tokenizer,
                               valid_fraction=args.valid_fraction, pool_tokens=args.token_budget,
                               seed=args.seed)
        valid = pr.targets(pools, args.targets.split(",") if args.targets else None)
    except (ValueError, OSError) as e:
        return _err(str(e))
    n = args.n_mixtures + args.n_eval
    M = sample_mixtures([pools.natural[d] for d in pools.domains], n, seed=args.seed)
    params = {"order": args.order} if args.kind == "ngram" else {}
    runner = pr.local_runner if args.local else map_tasks
    mix, loss = pr.run_proxies(M, pools, valid, kind=args.kind, token_budget=args.token_budget,
                               seed=args.seed, params=params, runner=runner, num_gpus=args.num_gpus)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    k = args.n_mixtures
    pr.write_csvs(mix.head(k), loss.head(k), out / "mixtures.csv", out / "losses.csv")
    if args.n_eval:
        pr.write_csvs(mix.tail(args.n_eval), loss.tail(args.n_eval), out / "eval_mixtures.csv",
                      out / "eval_losses.csv")
    pr.save_prior(pools, out / "prior.json")
    (out / "runs.json").write_text(json.dumps({"kind": args.kind, "token_budget": args.token_budget,
                                               "params": params, "targets": list(valid),
                                               "seconds": loss["seconds"].to_list()}, indent=1))
    print(f"{n} {args.kind} proxies on {len(pools.domains)} domains ({', '.join(pools.domains)}), "
          f"{loss['seconds'].mean():.2f} s each on average")
    print(f"wrote {out / 'mixtures.csv'}, {out / 'losses.csv'}"
          + (f", {out / 'eval_mixtures.csv'}, {out / 'eval_losses.csv'}" if args.n_eval else "")
          + f", {out / 'prior.json'}")
    print(f"next: tamis mix fit --mixtures {out / 'mixtures.csv'} --losses {out / 'losses.csv'} "
          f"--target {pr.loss_column(list(valid)[0])} --prior {out / 'prior.json'}")
    return 0


def run_apply(args) -> int:
    import numpy as np
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tamis.mixers.mixture import Mixture
    from tamis.mixers.proxy_runs import stable_hash
    from tamis.pipeline.data import LocalData
    from tamis.pipeline.readers import read_documents

    stage = Mixture(mixture=str(args.mixture), tokens=args.tokens, tokenizer=args.tokenizer,
                           max_epochs=args.max_epochs, on_cap=args.on_cap, seed=args.seed,
                           domain_column=args.domain_column)
    try:
        stage.validate()
        table = read_documents(args.input)
        missing = [c for c in ("id", "text", args.domain_column) if c not in table.column_names]
        if missing:
            return _err(f"{args.input}: input lacks column(s) {missing}")
        stage.fit(LocalData(table.select(["id", "text", args.domain_column])))
    except (ValueError, OSError) as e:
        return _err(str(e))
    reps = stage.transform(table)["mixture_repeats"].to_numpy()
    rows = np.repeat(np.arange(table.num_rows), reps)
    copy = np.arange(rows.size) - np.repeat(np.cumsum(reps) - reps, reps)
    out = table.take(pa.array(rows)).append_column("mixture_copy", pa.array(copy, pa.int64()))
    key = pl.from_arrow(out["id"]).cast(pl.Utf8) + ":" + pl.Series(copy).cast(pl.Utf8)
    order = np.argsort(stable_hash(key, args.seed), kind="stable")
    out = out.take(pa.array(order))   # copies spread through the file, deterministically
    args.out.mkdir(parents=True, exist_ok=True)
    pq.write_table(out, args.out / "mixed.parquet", compression="zstd")
    report = {"input": str(args.input), "mixture_file": str(args.mixture), "rows_in": table.num_rows,
              "rows_out": out.num_rows, **stage.report()}
    (args.out / "mixture_report.json").write_text(json.dumps(report, indent=2))
    print(f"{out.num_rows} rows ({report['tokens']} of {report['budget_tokens']} budget tokens, "
          f"{report['tokenizer']}) -> {args.out / 'mixed.parquet'}")
    print(f"{'domain':<22}{'weight':>8}{'share':>8}{'tokens':>12}{'epochs':>8}{'max rep':>8}")
    for d, r in report["domains"].items():
        flag = " capped" if r["capped"] else (" missing" if r["missing"] else "")
        print(f"{d:<22}{r['weight']:>8.4f}{r['share']:>8.4f}{r['tokens']:>12}{r['epochs']:>8.2f}"
              f"{r['max_repeats']:>8}{flag}")
    print(f"report: {args.out / 'mixture_report.json'}")
    return 0
