"""`embed`: one embedding column shared by semantic dedup, k-means and diversity sampling.

The vectors come from `tamis.pipeline.vectors.embeddings.TextEncoder` (its docstring describes the
`transformer` and `hashed` backends); this stage adds them as the fixed-size list column `embedding`.
"""
from __future__ import annotations

import pyarrow as pa

from tamis.pipeline.stage import Resources, Scorer
from tamis.pipeline.vectors.embeddings import TextEncoder, to_fixed_list


class Embed(Scorer):
    """Adds `embedding`: an L2-normalised fixed-size float32 vector per document.

    `backend="transformer"` (default all-MiniLM-L6-v2, 384-d, offline) or `"hashed"` (fast CPU,
    `dim` default 512). Empty text gives a zero vector with `hashed`.
    """

    name = "embed"
    requires = ("text",)
    columns = {"embedding": pa.list_(pa.float32(), 384)}
    resources = Resources(cpus=1.0, batch_size=512)
    packages = ("transformers", "torch", "sklearn")

    def __init__(self, backend: str = "transformer", model: str | None = None, dim: int | None = None,
                 max_length: int = 256, batch_size: int = 64, ngram_range: tuple[int, int] = (1, 1),
                 seed: int = 0, device: str = "auto"):
        self.backend = backend
        self.model = model
        self.dim = dim
        self.max_length = max_length
        self.batch_size = batch_size
        self.ngram_range = ngram_range
        self.seed = seed
        self.device = device

    def encoder(self) -> TextEncoder:
        if getattr(self, "_encoder", None) is None:
            self._encoder = TextEncoder(**self.get_params())
        return self._encoder

    def validate(self) -> None:
        self.encoder().validate()

    def embedding_dim(self) -> int:
        return self.encoder().embedding_dim()

    def output_columns(self) -> dict[str, pa.DataType]:
        return {"embedding": pa.list_(pa.float32(), self.embedding_dim())}

    def setup(self) -> None:
        self.encoder().setup()

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        return {"embedding": to_fixed_list(self.encoder().encode(batch["text"]))}
