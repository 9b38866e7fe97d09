"""`tamis mix fit | proxies | apply`: CSV format and joins, errors, JSON output, the end-to-end check."""
import json

import numpy as np
import polars as pl
import pytest

from tamis.mixers import proxy_runs as pr
from tamis.mixers.mixture_design import sample_mixtures
from tamis.pipeline.cli import main

DOMAINS = ["arxiv", "github", "pile_cc", "wiki"]
PRIOR = np.array([0.3, 0.3, 0.25, 0.15])
OPT = np.array([0.1, 0.2, 0.5, 0.2])


def loss_of(X):
    return 4.0 + ((np.asarray(X) - OPT) ** 2 * np.array([2.0, 2.5, 3.0, 2.0])).sum(axis=1)


def write_study(folder, n, seed, start=1, name=""):
    """Mixture and loss CSVs in RegMix's released layout (index, train_<domain>, metric/<t>_val_loss)."""
    X = sample_mixtures(PRIOR, n, seed=seed)
    idx = np.arange(start, start + n)
    mix = pl.DataFrame({"index": idx, **{f"train_{d}": X[:, j] for j, d in enumerate(DOMAINS)}})
    loss = pl.DataFrame({"index": idx, "metric/pile_cc_val_loss": loss_of(X),
                         "metric/train_loss": loss_of(X) + 1})
    m, l = folder / f"{name}mixtures.csv", folder / f"{name}losses.csv"
    mix.write_csv(m)
    loss.write_csv(l)
    return m, l


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    return (*write_study(d, 240, seed=1), *write_study(d, 64, seed=2, start=1001, name="eval_"))


def run_cli(capsys, *argv):
    code = main(["mix", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fit_json_with_eval_files_finds_the_optimum(study, capsys):
    m, l, em, el = study
    code, out, err = run_cli(capsys, "fit", "--mixtures", m, "--losses", l, "--target", "pile_cc",
                             "--eval-mixtures", em, "--eval-losses", el, "--json", "--candidates", 20000)
    assert code == 0, err
    res = json.loads(out)
    assert res["target"] == "metric/pile_cc_val_loss" and res["evaluation"] == "eval files"
    assert res["n_train"] == 240 and res["n_eval"] == 64
    assert res["spearman"] > 0.9 and res["pearson"] > 0.9
    w = np.array([res["mixture"][d] for d in DOMAINS])
    assert list(res["mixture"]) == DOMAINS and abs(w.sum() - 1) < 1e-3
    assert np.abs(w - OPT).sum() < 0.2, res["mixture"]


def test_fit_text_output_kfold_and_linear(study, capsys):
    m, l, _, _ = study
    code, out, err = run_cli(capsys, "fit", "--mixtures", m, "--losses", l, "--target",
                             "metric/pile_cc_val_loss", "--model", "linear")
    assert code == 0, err
    assert "5-fold" in out and "Spearman" in out and "Pearson" in out
    assert "searched 100000 candidates, averaged the best 128" in out
    assert sum(line.strip().split()[0] in DOMAINS for line in out.splitlines() if line.startswith("  ")) == 4


def test_rows_in_one_file_only_are_reported_and_skipped(tmp_path, capsys):
    m, l = write_study(tmp_path, 80, seed=3)
    loss = pl.read_csv(l)
    extra = loss.head(2).with_columns(pl.Series("index", [500, 501]))
    pl.concat([loss.filter(~pl.col("index").is_in([4, 9, 10])), extra]).write_csv(l)
    code, out, err = run_cli(capsys, "fit", "--mixtures", m, "--losses", l, "--target", "pile_cc",
                             "--json", "--candidates", 5000, "--model", "linear")
    assert code == 0, err
    assert f"3 row(s) only in {m} skipped (index 4, 9, 10)" in err
    assert f"2 row(s) only in {l} skipped (index 500, 501)" in err
    res = json.loads(out)
    assert res["n_train"] == 77
    assert res["skipped"] == {"only_mixtures": [4, 9, 10], "only_losses": [500, 501], "missing_target": []}


def test_empty_target_cells_are_skipped(tmp_path, capsys):
    m, l = write_study(tmp_path, 40, seed=4)
    loss = pl.read_csv(l).with_columns(
        pl.when(pl.col("index").is_in([2, 3])).then(None).otherwise(pl.col("metric/pile_cc_val_loss"))
        .alias("metric/pile_cc_val_loss"))
    loss.write_csv(l)
    code, out, err = run_cli(capsys, "fit", "--mixtures", m, "--losses", l, "--target", "pile_cc",
                             "--json", "--candidates", 2000, "--model", "linear")
    assert code == 0 and json.loads(out)["n_train"] == 38
    assert "have no 'metric/pile_cc_val_loss' value, skipped (index 2, 3)" in err


@pytest.mark.parametrize("breakage, message", [
    ("no_index", "{m}: mixture CSV has no 'index' column"),
    ("text_weight", "{m}: column 'train_github' is not numeric (found 'lots')"),
    ("float_index", "{m}: column 'index' must hold integers, found '1.5'"),
    ("dup_index", "{m}: column 'index' repeats values [2]"),
    ("no_target", "{l}: no target column 'books'"),
    ("text_loss", "{l}: column 'metric/pile_cc_val_loss' is not numeric (found 'oops')"),
])
def test_bad_csv_names_file_and_column(tmp_path, capsys, breakage, message):
    m, l = write_study(tmp_path, 30, seed=5)
    mix, loss = pl.read_csv(m), pl.read_csv(l)
    target = "books" if breakage == "no_target" else "pile_cc"
    if breakage == "no_index":
        mix = mix.rename({"index": "run"})
    elif breakage == "text_weight":
        mix = mix.with_columns(pl.when(pl.col("index") == 2).then(pl.lit("lots"))
                               .otherwise(pl.col("train_github").cast(pl.Utf8)).alias("train_github"))
    elif breakage == "float_index":
        mix = mix.with_columns(pl.when(pl.col("index") == 1).then(1.5).otherwise(pl.col("index")).alias("index"))
    elif breakage == "dup_index":
        mix = mix.with_columns(pl.when(pl.col("index") == 3).then(2).otherwise(pl.col("index")).alias("index"))
    elif breakage == "text_loss":
        loss = loss.with_columns(pl.when(pl.col("index") == 5).then(pl.lit("oops"))
                                 .otherwise(pl.col("metric/pile_cc_val_loss").cast(pl.Utf8))
                                 .alias("metric/pile_cc_val_loss"))
    mix.write_csv(m)
    loss.write_csv(l)
    code, out, err = run_cli(capsys, "fit", "--mixtures", m, "--losses", l, "--target", target, "--json")
    assert code == 2 and out == ""
    assert message.format(m=m, l=l) in err


def test_missing_file_and_lonely_eval_flag(tmp_path, capsys):
    m, l = write_study(tmp_path, 10, seed=6)
    code, _, err = run_cli(capsys, "fit", "--mixtures", tmp_path / "nope.csv", "--losses", l, "--target", "pile_cc")
    assert code == 2 and f"{tmp_path / 'nope.csv'}: mixture file not found" in err
    code, _, err = run_cli(capsys, "fit", "--mixtures", m, "--losses", l, "--target", "pile_cc",
                           "--eval-mixtures", m)
    assert code == 2 and "go together" in err


@pytest.fixture(scope="module")
def sample_parquet(corpus_dir, tmp_path_factory):
    files = ["sotu", "python-stdlib", "licenses-copyright", "bible-web", "linux-doc-6.1", "shakespeare-milton",
             "reuters-tm", "dict-foldoc"]
    df = pl.concat([pl.scan_parquet(corpus_dir / f"{f}.parquet").select("id", "text", "domain", "license").head(90)
                    .collect() for f in files])
    path = tmp_path_factory.mktemp("input") / "in.parquet"
    df.write_parquet(path)
    return path, df


def test_regmix_mixture_beats_uniform_and_natural(sample_parquet, tmp_path, capsys):
    """The issue's check, at test scale: n-gram proxies on shared-corpus domains, target legal+speeches."""
    path, df = sample_parquet
    budget, target = 150_000, "legal+speeches"
    code, out, err = run_cli(capsys, "proxies", path, "--out", tmp_path, "--n-mixtures", 32, "--n-eval", 8,
                             "--token-budget", budget, "--targets", f"{target},all", "--order", 3, "--local")
    assert code == 0, err
    header = (tmp_path / "mixtures.csv").read_text().splitlines()[0]
    assert header.startswith("index,train_")
    assert (tmp_path / "losses.csv").read_text().splitlines()[0] == \
        f"index,metric/{target}_val_loss,metric/all_val_loss"
    assert pl.read_csv(tmp_path / "eval_mixtures.csv")["index"].to_list() == list(range(33, 41))
    code, out, err = run_cli(capsys, "fit", "--mixtures", tmp_path / "mixtures.csv", "--losses",
                             tmp_path / "losses.csv", "--eval-mixtures", tmp_path / "eval_mixtures.csv",
                             "--eval-losses", tmp_path / "eval_losses.csv", "--target", target,
                             "--prior", tmp_path / "prior.json", "--json", "--out", tmp_path / "fit.json")
    assert code == 0, err
    res = json.loads(out)
    assert res["spearman"] > 0.5
    pools = pr.build_pools(df, pool_tokens=budget, seed=42)           # what `mix proxies` built
    valid = pr.targets(pools, [target])
    natural = json.loads((tmp_path / "prior.json").read_text())["prior"]
    uniform = {d: 1 / len(natural) for d in natural}

    def measured(w):
        return pr.run_mixture(0, w, pools, valid, token_budget=budget, seed=7, params={"order": 3})["losses"][target]

    chosen, uni, nat = measured(res["mixture"]), measured(uniform), measured(natural)
    print(f"{target}: regmix {chosen:.4f}  uniform {uni:.4f}  natural {nat:.4f}")
    assert chosen < uni and chosen < nat


def test_apply_writes_the_budget_with_repeats(sample_parquet, tmp_path, capsys):
    path, df = sample_parquet
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"spearman": 1.0, "mixture": {"speeches": 0.5, "news": 0.3, "code": 0.2}}))
    code, out, err = run_cli(capsys, "apply", path, "--mixture", mix, "--tokens", 1_000_000,
                             "--out", tmp_path / "out", "--max-epochs", 3)
    assert code == 0, err
    got = pl.read_parquet(tmp_path / "out" / "mixed.parquet")
    rep = json.loads((tmp_path / "out" / "mixture_report.json").read_text())
    assert got["text"].str.len_bytes().sum() == rep["tokens"]
    # whole documents only: each uncapped domain lands within about one document of its target
    biggest = df.filter(pl.col("domain").is_in(["speeches", "code"])).group_by("domain").agg(
        pl.col("text").str.len_bytes().max())["text"].sum()
    assert abs(rep["tokens"] - 1_000_000) <= biggest
    for d in ("speeches", "code"):
        r = rep["domains"][d]
        assert abs(r["tokens"] - r["target_tokens"]) <= biggest
    assert set(got["domain"].unique()) == {"speeches", "news", "code"}
    assert {"license", "mixture_copy"} <= set(got.columns)
    news = rep["domains"]["news"]
    assert news["capped"] and news["max_repeats"] == 3
    per_id = got.group_by("id").agg(pl.len().alias("n"), pl.col("mixture_copy").max())
    assert per_id["n"].max() == 3 and (per_id["mixture_copy"] == per_id["n"] - 1).all()
    assert "capped" in out and "news" in out
    again = tmp_path / "again"
    assert main(["mix", "apply", str(path), "--mixture", str(mix), "--tokens", "1000000", "--out", str(again),
                 "--max-epochs", "3"]) == 0
    assert pl.read_parquet(again / "mixed.parquet")["id"].to_list() == got["id"].to_list()


# Headers of sail-sg/regmix data/train_mixture_1m.csv and data/train_pile_loss_1m.csv, verbatim.
REGMIX_MIX_HEADER = ("index,train_the_pile_arxiv,train_the_pile_freelaw,train_the_pile_nih_exporter,"
                     "train_the_pile_pubmed_central,train_the_pile_wikipedia_en,train_the_pile_dm_mathematics,"
                     "train_the_pile_github,train_the_pile_philpapers,train_the_pile_stackexchange,"
                     "train_the_pile_enron_emails,train_the_pile_gutenberg_pg_19,train_the_pile_pile_cc,"
                     "train_the_pile_ubuntu_irc,train_the_pile_europarl,train_the_pile_hackernews,"
                     "train_the_pile_pubmed_abstracts,train_the_pile_uspto_backgrounds")
REGMIX_LOSS_HEADER = ("index,metric/the_pile_arxiv_val_loss,metric/the_pile_freelaw_val_loss,"
                      "metric/the_pile_pubmed_central_val_loss,metric/the_pile_wikipedia_en_val_loss,"
                      "metric/the_pile_dm_mathematics_val_loss,metric/the_pile_github_val_loss,"
                      "metric/the_pile_stackexchange_val_loss,metric/the_pile_gutenberg_pg_19_val_loss,"
                      "metric/the_pile_pile_cc_val_loss,metric/the_pile_ubuntu_irc_val_loss,"
                      "metric/the_pile_hackernews_val_loss,metric/the_pile_pubmed_abstracts_val_loss,"
                      "metric/the_pile_uspto_backgrounds_val_loss")


def test_reads_regmix_released_layout(tmp_path, capsys):
    """Users bring RegMix's own files: their headers work as they are (rows 1-2 are RegMix's)."""
    rng = np.random.default_rng(0)
    mix_rows = ["1,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.004,0.0,0.0,0.209,0.787,0.0,0.0,0.0,0.0,0.0",
                "2,0.025,0.002,0.05,0.0,0.047,0.0,0.304,0.009,0.003,0.001,0.103,0.299,0.024,0.04,0.09,0.001,0.0"]
    W = sample_mixtures(np.full(17, 1 / 17), 58, seed=1)
    mix_rows += [f"{i + 3}," + ",".join(f"{w:.3f}" for w in row) for i, row in enumerate(W)]
    X = np.array([[float(v) for v in r.split(",")[1:]] for r in mix_rows])
    pile_cc = 5.5 - 0.9 * X[:, 11] + 0.05 * rng.normal(size=len(X))   # more Pile-CC, lower Pile-CC loss
    loss_rows = [f"{i + 1}," + ",".join(f"{v:.6f}" for v in [*rng.uniform(3, 7, 8), pile_cc[i], *rng.uniform(3, 7, 4)])
                 for i in range(len(X))]
    (tmp_path / "m.csv").write_text("\n".join([REGMIX_MIX_HEADER, *mix_rows]) + "\n")
    (tmp_path / "l.csv").write_text("\n".join([REGMIX_LOSS_HEADER, *loss_rows]) + "\n")
    code, out, err = run_cli(capsys, "fit", "--mixtures", tmp_path / "m.csv", "--losses", tmp_path / "l.csv",
                             "--target", "the_pile_pile_cc", "--model", "linear", "--json", "--candidates", 5000)
    assert code == 0, err
    res = json.loads(out)
    assert res["target"] == "metric/the_pile_pile_cc_val_loss" and res["n_train"] == 60
    assert list(res["mixture"])[0] == "the_pile_arxiv" and len(res["mixture"]) == 17
    assert max(res["mixture"], key=res["mixture"].get) == "the_pile_pile_cc"
