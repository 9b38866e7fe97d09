"""Per-document scorers, filters and dedup stages, plus the plug-in base classes.

`REGISTRY` maps a stage name (as written in a job's `use:`) to `module:Class`; classes import
lazily so that `import scorers` stays cheap (no torch, no faiss). Third-party stages register in the
entry-point group `tamis.scorers` or are named directly in a job with `class: pkg.module:Class`.
"""
from scorers.base import GlobalStage, Resources, Scorer, Stage

REGISTRY: dict[str, str] = {
    "filter": "scorers.filter:Filter",
    "signals": "scorers.signals:SignalsScorer",
    "gopher_quality": "scorers.gopher_quality:GopherQualityScorer",
    "gopher_repetition": "scorers.gopher_repetition:GopherRepetitionScorer",
    "unique_ids": "scorers.unique_ids:UniqueIds",
    "exact_dedup": "scorers.exact_dedup:ExactDedup",
    "minhash_dedup": "scorers.minhash_dedup:MinHashDedup",
    "semantic_dedup": "scorers.semantic_dedup:SemanticDedup",
    "perplexity": "scorers.perplexity:PerplexityScorer",
    "kenlm": "scorers.kenlm_scorer:KenLMScorer",
    "ppl_bucket": "scorers.ppl_bucket:PplBucket",
    "langid": "scorers.langid:LangIdScorer",
    "decontaminate": "scorers.decontaminate:Decontaminate",
    "rater": "scorers.rater:RaterScorer",
    "embed": "mixers.embed:EmbedScorer",
    "kmeans": "mixers.kmeans:KMeansStage",
    "cluster_sample": "mixers.cluster_sampler:ClusterSampler",
    "quality_weights": "mixers.quality_weights:QualityWeights",
    "mixture": "mixers.mixture:MixtureSampler",
}

__all__ = ["GlobalStage", "REGISTRY", "Resources", "Scorer", "Stage"]
