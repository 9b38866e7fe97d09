"""Perplexity of each document under a reference causal language model (CCNet-style signal).

Any local causal LM folder loads through `transformers` (`tamis train-lm` makes one; a hub id works
where the hub is reachable). Per batch: documents are tokenized in one call, a BOS token is
prepended, documents longer than the window are cut into overlapping windows (each token is scored
once, with at least `max_length - stride` tokens of context after the first window), windows are
sorted by length and packed into micro-batches under a token budget, padding is masked, and the
logits are computed only at scored positions. `ppl = exp(Σ NLL / Σ tokens)` per document (natural
log, token-weighted over windows); `ppl_tokens` is the number of scored tokens.
"""
from __future__ import annotations

import inspect
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from tamis.pipeline.stage import Resources, Scorer
from tamis.scorers.perplexity.train_lm import READ_OPTIONS, TRAIN_OPTIONS, is_model_dir, train_from_files


PRECISIONS = ("auto", "float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")


def make_windows(ids: list[np.ndarray], max_length: int, stride: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split token sequences into scoring windows.

    Returns per window: document index, start, end (token offsets into the document) and `first`,
    the first token offset the window scores. Token 0 (the BOS, or the first token without one) is
    never scored; later windows re-read `max_length - stride` tokens (at least one) as context.
    """
    doc, start, end, first = [], [], [], []
    for i, x in enumerate(ids):
        n = len(x)
        if n < 2:
            continue
        b, scored = 0, 1
        while scored < n:
            e = min(b + max_length, n)
            doc.append(i), start.append(b), end.append(e), first.append(scored)
            scored = e
            b = max(e - max(max_length - stride, 1), b + 1) if e < n else n
    as_arr = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return as_arr(doc), as_arr(start), as_arr(end), as_arr(first)


def use_bf16(nll32: float, nll16: float, tokens: int, t32: float, t16: float,
             tolerance: float = 0.01, speedup: float = 1.25) -> bool:
    """The CPU autocast rule: bf16 only if `speedup`× faster and perplexity within `tolerance`."""
    if tokens <= 0:
        return False
    rel = abs(math.exp((nll16 - nll32) / tokens) - 1.0)
    return rel <= tolerance and t32 >= speedup * t16


def micro_batches(lengths: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Window indices grouped longest first, each group's rows × longest length ≤ batch_tokens."""
    order = np.argsort(-lengths, kind="stable")
    groups, cur, width = [], [], 0
    for w in order.tolist():
        width = width or int(lengths[w])
        if cur and (len(cur) + 1) * width > batch_tokens:
            groups.append(np.asarray(cur))
            cur, width = [], int(lengths[w])
        cur.append(w)
    if cur:
        groups.append(np.asarray(cur))
    return groups


class Perplexity(Scorer):
    """Per-document perplexity under a reference LM: `ppl` (float64, null for empty text), `ppl_tokens`.

    Source: Wenzek et al. 2019 (CCNet) score documents under a reference LM and bucket them by
    perplexity (see `ppl_bucket`). CCNet uses a KenLM 5-gram (`kenlm` stage); this stage uses any
    `transformers` causal LM.
    """

    name = "perplexity"
    requires = ("text",)
    columns = {"ppl": pa.float64(), "ppl_tokens": pa.int64()}
    resources = Resources(cpus=1, batch_size=256)
    packages = ("torch", "transformers")

    def __init__(self, model: str = "runs/ref-lm", max_length: int | None = None,
                 stride: int | None = None, batch_tokens: int = 8192,
                 max_doc_tokens: int | None = None, precision: str = "auto",
                 device: str = "auto", add_bos: bool = True, train_if_missing: dict | None = None):
        self.model = model
        self.max_length = max_length
        self.stride = stride
        self.batch_tokens = batch_tokens
        self.max_doc_tokens = max_doc_tokens
        self.precision = precision
        self.device = device
        self.add_bos = add_bos
        self.train_if_missing = train_if_missing

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model must be a model folder or hub id")
        for p in ("max_length", "stride", "max_doc_tokens"):
            v = getattr(self, p)
            if v is not None and (not isinstance(v, int) or v < 2):
                raise ValueError(f"{p} must be an integer >= 2 or null, got {v!r}")
        if self.max_length and self.stride and self.stride > self.max_length:
            raise ValueError(f"stride ({self.stride}) must be <= max_length ({self.max_length})")
        if not isinstance(self.batch_tokens, int) or self.batch_tokens < 1:
            raise ValueError(f"batch_tokens must be a positive integer, got {self.batch_tokens!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        t = self.train_if_missing
        if t is not None:
            if not isinstance(t, dict) or "input" not in t:
                raise ValueError("train_if_missing must be a mapping with at least `input: [paths]`")
            unknown = set(t) - set(TRAIN_OPTIONS) - set(READ_OPTIONS)
            if unknown:
                raise ValueError(f"train_if_missing has unknown keys {sorted(unknown)}; "
                                 f"allowed: {sorted(TRAIN_OPTIONS + READ_OPTIONS)}")

    def prepare(self) -> None:
        """On the driver, once: train the reference LM into `model` when that folder is absent or
        empty and `train_if_missing` is set (a folder holding anything else is refused, never
        deleted); pin the resolved folder for the workers (`model_path_`)."""
        path = Path(self.model).expanduser()
        if not is_model_dir(path) and self.train_if_missing is not None:
            if path.is_symlink() or path.exists() and not (path.is_dir() and not any(path.iterdir())):
                raise FileExistsError(
                    f"perplexity: model {path} exists but holds no model (no config.json); "
                    f"train_if_missing trains only into an absent or empty folder and never deletes one: "
                    f"remove it yourself or point `model:` elsewhere")
            opts = dict(self.train_if_missing)
            train_from_files(opts.pop("input"), path, **opts)
        if is_model_dir(path):
            self.model_path_ = str(path.resolve())

    # -- worker side ---------------------------------------------------------------------------

    def setup(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = getattr(self, "model_path_", None) or self.model
        local = Path(source).expanduser()
        if local.exists() or source.startswith((".", "/", "~")):
            if not is_model_dir(local):
                raise FileNotFoundError(
                    f"perplexity: no model at {local}; train one with `tamis train-lm --output "
                    f"{self.model}` or give the stage `train_if_missing: {{input: [...]}}`")
            source = str(local)
        kw = {"local_files_only": True} if local.exists() else {}
        try:
            self.tokenizer_ = AutoTokenizer.from_pretrained(source, **kw)
            model = AutoModelForCausalLM.from_pretrained(source, **kw)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f"perplexity: cannot load {source!r} as a local folder or a hub id ({e}); train a "
                f"local model with `tamis train-lm --output {self.model}` or give the stage "
                f"`train_if_missing: {{input: [...]}}`") from None
        want = self.device
        self.device_ = torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available())
                                    else "cpu")
        self.model_ = model.to(self.device_).eval()
        self.dtype_ = self._choose_dtype(torch)
        cfg = model.config
        limit = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024
        self.window_ = int(min(self.max_length or 1024, limit))
        self.stride_ = int(min(self.stride or max(1, self.window_ // 2), self.window_ - 1))
        tok = self.tokenizer_
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.bos_ = bos if self.add_bos else None
        self.pad_ = tok.pad_token_id if tok.pad_token_id is not None else (bos or 0)
        self.keep_logits_ = "logits_to_keep" in inspect.signature(model.forward).parameters

    def _choose_dtype(self, torch):
        """bf16 autocast on GPUs that support it. On CPU, `auto` means float32 unless the CPU has
        native bf16 (AVX512-BF16 / AMX), where the first micro-batch is run both ways and bf16 is
        kept only if ≥ 1.25× faster with perplexity within 1% (see docs/perplexity.md)."""
        self.probe_pending_ = False
        if self.precision == "bfloat16":
            return torch.bfloat16
        if self.precision == "float32":
            return None
        if self.device_.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        native = [getattr(torch.cpu, f, lambda: False)() for f in
                  ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        self.probe_pending_ = any(native)
        return None

    def tokenize(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids per text, BOS first when the model has one, cut to `max_doc_tokens`."""
        enc = self.tokenizer_(texts, add_special_tokens=False, return_attention_mask=False,
                              verbose=False)["input_ids"]
        head = [self.bos_] if self.bos_ is not None else []
        cap = self.max_doc_tokens
        return [np.asarray(head + (x[:cap] if cap else x), dtype=np.int64) for x in enc]

    def batches(self, ids: list[np.ndarray]):
        """Yield `(input_ids, attention_mask, score_mask, window_doc)` micro-batches as numpy arrays.

        `score_mask[r, p]` is True where the logits at position p predict a scored token p + 1.
        """
        doc, start, end, first = make_windows(ids, self.window_, self.stride_)
        lengths = end - start
        for group in micro_batches(lengths, self.batch_tokens):
            width = int(lengths[group].max())
            inp = np.full((len(group), width), self.pad_, dtype=np.int64)
            att = np.zeros((len(group), width), dtype=np.int64)
            score = np.zeros((len(group), width), dtype=bool)
            for r, w in enumerate(group.tolist()):
                n = int(lengths[w])
                inp[r, :n] = ids[doc[w]][start[w]:end[w]]
                att[r, :n] = 1
                score[r, first[w] - start[w] - 1:n - 1] = True
            yield inp, att, score, doc[group]

    def nll(self, inp, att, score):
        """Summed NLL (float64) and token count per row of one micro-batch."""
        if self.probe_pending_:
            return self._probe(inp, att, score)
        return self._nll(inp, att, score, self.dtype_), score.sum(axis=1)

    def _probe(self, inp, att, score):
        import torch

        self.probe_pending_ = False
        timings = {}
        for dtype in (None, torch.bfloat16):
            self._nll(inp, att, score, dtype)  # warm-up (oneDNN builds kernels on first use)
            t0 = time.perf_counter()
            timings[dtype] = (self._nll(inp, att, score, dtype), time.perf_counter() - t0)
        (n32, t32), (n16, t16) = timings[None], timings[torch.bfloat16]
        if use_bf16(n32.sum(), n16.sum(), int(score.sum()), t32, t16):
            self.dtype_ = torch.bfloat16
        return n32, score.sum(axis=1)

    def _nll(self, inp, att, score, dtype):
        import torch
        import torch.nn.functional as F

        dev = self.device_
        x = torch.from_numpy(inp).to(dev, non_blocking=True)
        m = torch.from_numpy(att).to(dev, non_blocking=True)
        s = torch.from_numpy(score).to(dev, non_blocking=True)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype or torch.bfloat16,
                                                    enabled=dtype is not None):
            logits = None
            if self.keep_logits_:  # logits only where a token is scored (transformers >= 5)
                logits = self.model_(input_ids=x, attention_mask=m, logits_to_keep=s).logits
                if logits.dim() != 2:  # a model that takes only an int: use the plain path
                    self.keep_logits_, logits = False, None
            if logits is None:
                logits = self.model_(input_ids=x, attention_mask=m).logits[s]
            target = torch.roll(x, -1, dims=1)[s]
            tok_nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target,
                                      reduction="none")
        row = torch.nonzero(s, as_tuple=True)[0]
        sums = torch.zeros(len(inp), dtype=torch.float64, device=dev)
        sums.index_add_(0, row, tok_nll.double())
        return sums.cpu().numpy()

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        if not hasattr(self, "model_"):
            self.setup()
        n = batch.num_rows
        nll = np.zeros(n, dtype=np.float64)
        count = np.zeros(n, dtype=np.int64)
        if n:
            ids = self.tokenize(batch.column("text").to_pylist())
            for inp, att, score, docs in self.batches(ids):
                sums, toks = self.nll(inp, att, score)
                np.add.at(nll, docs, sums)
                np.add.at(count, docs, toks)
        with np.errstate(divide="ignore", invalid="ignore"):
            ppl = np.exp(nll / count)
        return {"ppl": pa.array(ppl, pa.float64(), mask=count == 0),
                "ppl_tokens": pa.array(count, pa.int64())}
