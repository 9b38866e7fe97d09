"""Training-ready output: tokenize curated text into shuffled, sharded token files (`tamis export`).

`tokenize` (a Hugging Face fast tokenizer, EOS), `formats` (Megatron `.bin`/`.idx`, Dolma-style `.npy`),
`shuffle` (the seeded global order and the shard cuts), `mixture` (domain weights to copies per
document), `work` (the export folder, its resume bookkeeping and the three passes' task bodies).
Pure: no Ray here; `tamis.pipeline.runner.export` fans the passes out as Ray tasks.
"""
