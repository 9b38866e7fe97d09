"""Model-based quality classifiers: fastText (DCLM) and Hugging Face heads (FineWeb-Edu, Nemotron-CC)."""
