"""Text cleaning: editors that rewrite `text` (PII redaction, line rules) and cross-document
paragraph dedup. See docs/cleaning.md for each stage, its sources and defaults."""
