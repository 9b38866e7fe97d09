"""Per-document stages: quality signals and filters, perplexity, Meta-rater ratings, language ID,
deduplication and decontamination. Each stage module depends on `tamis.pipeline.stage` (the
contract) and the shared helpers in `tamis.pipeline.text` / `tamis.pipeline.vectors`, never on the
runner; the engine finds the stages through the `tamis.stages` entry points (`pyproject.toml`)."""
