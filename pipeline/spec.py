"""Job specs: YAML parsed into pydantic models, stages resolved and validated when the job loads.

Errors name the file and the key path (`stages[2].params.bands`), so a typo fails in a second, not
hours into a run.
"""
from __future__ import annotations

import glob
import importlib
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.rules import RuleError, compile_rules
from scorers import REGISTRY
from scorers.base import GlobalStage, Resources, Scorer, Stage
from scorers.unique_ids import UniqueIds


class SpecError(ValueError):
    """A job spec that cannot run; the message names the file and key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourcesSpec(_Strict):
    cpus: float | None = None
    gpus: float | None = None
    batch_size: int | None = Field(default=None, ge=1)
    actors: int | None = Field(default=None, ge=1)


class StageSpec(_Strict):
    use: str | None = None
    class_: str | None = Field(default=None, alias="class")
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    keep: Union[Literal["default"], dict[str, str], None] = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FieldsSpec(_Strict):
    text: str = "text"
    id: str | None = "id"


class RaySpec(_Strict):
    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    object_store_memory: int | None = Field(default=None, ge=75 * 1024**2)


class ReadSpec(_Strict):
    batch_rows: int = Field(default=2000, ge=1)
    max_line_bytes: int = Field(default=256 * 1024**2, ge=1024)
    split_bytes: int = Field(default=32 * 1024**2, ge=1)


class JobSpec(_Strict):
    name: str = "job"
    inputs: list[str] = Field(default_factory=list)
    fields: FieldsSpec = Field(default_factory=FieldsSpec)
    output: str = "runs/job"
    ray: RaySpec = Field(default_factory=RaySpec)
    read: ReadSpec = Field(default_factory=ReadSpec)
    stages: list[StageSpec] = Field(default_factory=list)

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_input(cls, v):
        return [v] if isinstance(v, str) else v


class PlannedStage:
    """A stage instance with its resolved name, rules and resources."""

    def __init__(self, name: str, stage: Stage, rules: dict[str, str], resources: Resources, index: int):
        self.name, self.stage, self.rules, self.resources, self.index = name, stage, rules, resources, index

    @property
    def is_global(self) -> bool:
        return isinstance(self.stage, GlobalStage)

    def to_dict(self) -> dict:
        return {"name": self.name, "class": f"{type(self.stage).__module__}:{type(self.stage).__name__}",
                "params": self.stage.get_params(), "keep": self.rules,
                "resources": self.resources.__dict__}


RUN_LAYOUT = 2  # 2: consecutive global stages share one stream (and one manifest folder)


class Job:
    """A loaded, validated job: the spec, its input files and its planned stages."""

    def __init__(self, spec: JobSpec, source: str, base_dir: Path):
        self.spec, self.source, self.base_dir = spec, source, base_dir
        self.stages = plan_stages(spec, source)
        self.input_files: list[Path] = []

    @property
    def output(self) -> Path:
        return self.resolve(self.spec.output)

    def resolve(self, p: str) -> Path:
        path = Path(os.path.expanduser(p))
        return path if path.is_absolute() else (Path.cwd() / path)

    def fingerprint(self) -> dict:
        """What makes two runs of a job the same (used to refuse resuming a changed job). `layout`
        names the run folder's layout: a folder an older tamis left half-done is not resumed."""
        return {"layout": RUN_LAYOUT, "fields": self.spec.fields.model_dump(), "read": self.spec.read.model_dump(),
                "inputs": [str(p) for p in self.input_files],
                "stages": [s.to_dict() for s in self.stages]}


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_class(ref: str, where: str, job_dir: Path | None = None) -> type[Stage]:
    """Resolve `use:` names (registry, then entry points) and `class: pkg.mod:Class` paths."""
    target = ref
    if ":" not in ref:
        target = REGISTRY.get(ref)
        if target is None:
            eps = {ep.name: ep for ep in entry_points(group="tamis.scorers")}
            if ref in eps:
                cls = eps[ref].load()
                return _check_stage_class(cls, ref, where)
            known = sorted(set(REGISTRY) | set(eps))
            raise SpecError(f"{where}: unknown stage {ref!r}; known: {', '.join(known)}")
    module, _, attr = target.partition(":")
    for extra in (str(Path.cwd()), str(job_dir)) if job_dir else (str(Path.cwd()),):
        if extra not in sys.path:
            sys.path.append(extra)  # `class: my_module:MyScorer` next to the job file or the shell
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        raise SpecError(f"{where}: cannot import {target!r}: {e}") from None
    except AttributeError:
        raise SpecError(f"{where}: module {module!r} has no class {attr!r}") from None
    return _check_stage_class(cls, ref, where)


def _check_stage_class(cls, ref: str, where: str) -> type[Stage]:
    if not (isinstance(cls, type) and issubclass(cls, (Scorer, GlobalStage))):
        raise SpecError(f"{where}: {ref!r} is not a scorers.Scorer or scorers.GlobalStage subclass")
    return cls


def _check_packages(cls: type[Stage], where: str) -> None:
    for pkg in cls.packages:
        if importlib.util.find_spec(pkg) is None:
            raise SpecError(f"{where}: stage needs the Python package {pkg!r}: pip install {pkg}")


def plan_stages(spec: JobSpec, source: str) -> list[PlannedStage]:
    planned: list[PlannedStage] = []
    produced: dict[str, str] = {}
    seen: set[str] = set()
    for i, st in enumerate(spec.stages):
        where = f"{source}: stages[{i}]"
        if (st.use is None) == (st.class_ is None):
            raise SpecError(f"{where}: give exactly one of 'use' (a stage name) or 'class' (pkg.module:Class)")
        cls = load_class(st.use or st.class_, where + (".use" if st.use else ".class"), Path(source).parent)
        _check_packages(cls, where)
        known = cls.param_names()
        unknown = sorted(set(st.params) - set(known))
        if unknown:
            raise SpecError(f"{where}.params: unknown parameter(s) {unknown} for {cls.__name__}; "
                            f"known: {known}")
        try:
            stage = cls(**st.params)
            stage.validate()
        except (TypeError, ValueError) as e:
            raise SpecError(f"{where}.params: {e}") from None
        name = st.name or cls.name or cls.__name__.lower()
        if name in seen:
            raise SpecError(f"{where}.name: stage name {name!r} is used twice; give one a 'name:'")
        seen.add(name)
        rules = stage.default_rules() if st.keep == "default" else dict(st.keep or {})
        try:
            compile_rules(rules)
        except RuleError as e:
            raise SpecError(f"{where}.keep: {e}") from None
        try:
            base = cls.resources
            r = st.resources
            resources = Resources(
                cpus=base.cpus if r.cpus is None else r.cpus, gpus=base.gpus if r.gpus is None else r.gpus,
                batch_size=r.batch_size or base.batch_size, actors=r.actors or base.actors)
        except ValueError as e:
            raise SpecError(f"{where}.resources: {e}") from None
        planned.append(PlannedStage(name, stage, rules, resources, i))
        for col in stage.output_columns():
            produced.setdefault(col, name)
    if not any(isinstance(p.stage, UniqueIds) for p in planned):
        at = next((i for i, p in enumerate(planned) if p.is_global), len(planned))
        uid = UniqueIds()
        planned.insert(at, PlannedStage("unique_ids", uid, uid.default_rules(), UniqueIds.resources, -1))
    # A stage must not read a column that only a later stage writes.
    for i, p in enumerate(planned):
        later = {c: q.name for q in planned[i + 1:] for c in q.stage.output_columns()}
        earlier = {c for q in planned[:i + 1] for c in q.stage.output_columns()}
        rule_cols = set()
        for rule in compile_rules(p.rules):
            rule_cols |= rule.columns
        for col in set(p.stage.required_columns()) | rule_cols:
            if col in later and col not in earlier:
                raise SpecError(f"{source}: stages[{p.index}] ({p.name}) reads {col!r}, "
                                f"which only the later stage {later[col]!r} writes: reorder the stages")
    return planned


def load_job(path: str | Path, inputs: list[str] | None = None, output: str | None = None,
             address: str | None = None) -> Job:
    """Read and validate a job file; CLI overrides replace `inputs`, `output` and `ray.address`."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"job file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a job spec is a mapping of keys (name, inputs, output, stages, ...)")
    if inputs:
        raw["inputs"] = list(inputs)
    if output:
        raw["output"] = output
    if address:
        raw.setdefault("ray", {})
        raw["ray"] = {**(raw["ray"] or {}), "address": address}
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {_fmt_loc(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise SpecError("invalid job spec\n  " + "\n  ".join(lines)) from None
    job = Job(spec, str(path), path.parent)
    job.input_files = expand_inputs(spec.inputs, str(path))
    return job


INPUT_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".parquet", ".arrow")


def _is_hf_dataset_dir(p: Path) -> bool:
    return (p / "state.json").is_file() or (p / "dataset_dict.json").is_file()


def expand_inputs(inputs: list[str], source: str) -> list[Path]:
    """Files, globs and folders -> a sorted list of input files (HF `save_to_disk` folders kept whole)."""
    if not inputs:
        raise SpecError(f"{source}: inputs: no input given (set 'inputs:' or pass --input)")
    out: list[Path] = []
    for i, item in enumerate(inputs):
        item_path = Path(os.path.expanduser(item))
        matches = sorted(glob.glob(str(item_path), recursive=True)) if glob.has_magic(item) else [str(item_path)]
        if not matches or not all(Path(m).exists() for m in matches):
            raise SpecError(f"{source}: inputs[{i}]: no such file or folder: {item}")
        for m in map(Path, matches):
            if m.is_dir() and not _is_hf_dataset_dir(m):
                hf = sorted(d.parent for d in m.rglob("state.json"))
                files = [f for f in m.rglob("*") if f.is_file() and f.name.endswith(INPUT_SUFFIXES)
                         and not any(part.startswith((".", "_")) for part in f.relative_to(m).parts)
                         and not any(h in f.parents for h in hf)]
                if not files and not hf:
                    raise SpecError(f"{source}: inputs[{i}]: folder {m} holds no input files "
                                    f"({', '.join(INPUT_SUFFIXES)} or a datasets save_to_disk folder)")
                out.extend(sorted(files + hf))
            else:
                out.append(m)
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(key)
    return unique
