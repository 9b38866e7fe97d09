"""Job specs: YAML parsed into pydantic models, stages resolved and validated when the job loads.

Errors name the file and the key path (`stages[2].params.bands`), so a typo fails in a second, not
hours into a run.
"""
from __future__ import annotations

import fnmatch
import glob
import difflib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tamis.pipeline import registry
from tamis.pipeline.export.tokenize import TokenizerError, load_tokenizer
from tamis.pipeline.readers import InputError, expand_inputs, input_columns, input_fingerprint, reserved_renames
from tamis.pipeline.rules import RuleError, compile_rules
from tamis.pipeline.stage import GlobalStage, Resources, Stage


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
    # How a run knows its inputs did not change (resume): each file's size and mtime (`stat`), or
    # the sha256 of its bytes (`content`: survives copies and touches, costs one read of the inputs).
    fingerprint: Literal["stat", "content"] = "stat"


class JobSpec(_Strict):
    name: str = "job"
    inputs: list[str] = Field(default_factory=list)
    fields: FieldsSpec = Field(default_factory=FieldsSpec)
    output: str = "runs/job"
    ray: RaySpec = Field(default_factory=RaySpec)
    read: ReadSpec = Field(default_factory=ReadSpec)
    stages: list[StageSpec] = Field(default_factory=list)
    # A Hugging Face fast tokenizer (folder with tokenizer.json, or the file): reports count its tokens
    # instead of whitespace-separated words (docs/reports.md).
    tokenizer: str | None = None
    # A stage that fails on more than this share of its rows (in a batch of >= 20 rows, or over
    # the run) stops the job: that is a bug or a wrong setting, not bad data to quarantine.
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)

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

    @property
    def tokenizer(self) -> str | None:
        """The job's tokenizer as an absolute path, or None (reports count whitespace words)."""
        return str(self.resolve(self.spec.tokenizer)) if self.spec.tokenizer else None

    def resolve(self, p: str) -> Path:
        path = Path(os.path.expanduser(p))
        return path if path.is_absolute() else (Path.cwd() / path)

    def fingerprint(self) -> dict:
        """What makes two runs of a job the same (used to refuse resuming a changed job): the spec and
        each input's files with their size and mtime, or their sha256 (`read.fingerprint`). `layout`
        names the run folder's layout: a folder an older tamis left half-done is not resumed."""
        return {"layout": RUN_LAYOUT, "fields": self.spec.fields.model_dump(), "read": self.spec.read.model_dump(),
                "inputs": [input_fingerprint(p, self.spec.read.fingerprint) for p in self.input_files],
                "stages": [s.to_dict() for s in self.stages], **({"tokenizer": self.tokenizer} if self.tokenizer else {})}


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_class(ref: str, where: str, job_dir: Path | None = None) -> type[Stage]:
    """Resolve a `use:` name or `class: pkg.mod:Class` path through the registry, naming `where`."""
    try:
        return registry.load_class(ref, job_dir)
    except registry.UnknownStage as e:
        raise SpecError(f"{where}: {e}") from None


def _check_packages(cls: type[Stage], where: str) -> None:
    for pkg in cls.packages:
        if importlib.util.find_spec(pkg) is None:
            raise SpecError(f"{where}: stage needs the Python package {pkg!r}: pip install {pkg}")


STAGE_NAME = re.compile(r"[a-z0-9_]{1,64}")


def _check_stage_name(name: Any, where: str, cls: type[Stage] | None) -> None:
    """Stage names become folder and file names in the run folder: 1-64 of `[a-z0-9_]`, nothing else.
    `cls` is the class the name came from when the spec gave none."""
    if isinstance(name, str) and STAGE_NAME.fullmatch(name):
        return
    rule = "must be 1-64 lowercase letters, digits or underscores"
    if cls is None:
        raise SpecError(f"{where}: stage name {name!r} {rule}")
    raise SpecError(f"{where}: the default name {name!r} of {cls.__module__}:{cls.__qualname__} (its `name` "
                    f"attribute or class name) {rule}; give the stage a 'name:'")


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
        name = st.name if st.name is not None else (cls.name or cls.__name__.lower())
        _check_stage_name(name, f"{where}.name", None if st.name is not None else cls)
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
    unique_ids = registry.stage_class("unique_ids")
    if not any(isinstance(p.stage, unique_ids) for p in planned):
        at = next((i for i, p in enumerate(planned) if p.is_global), len(planned))
        uid = unique_ids()
        planned.insert(at, PlannedStage("unique_ids", uid, uid.default_rules(), unique_ids.resources, -1))
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
             address: str | None = None, text_column: str | None = None, id_column: str | None = None) -> Job:
    """Read and validate a job file; CLI overrides replace `inputs`, `output`, `ray.address` and
    `fields.text` / `fields.id`."""
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
    for key, value in (("text", text_column), ("id", id_column)):
        if value:
            fields = raw.get("fields") if isinstance(raw.get("fields"), dict) else {}
            raw["fields"] = {**fields, key: value}
    if address:
        raw.setdefault("ray", {})
        raw["ray"] = {**(raw["ray"] or {}), "address": address}
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {_fmt_loc(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise SpecError("invalid job spec\n  " + "\n  ".join(lines)) from None
    job = Job(spec, str(path), path.parent)
    try:
        job.input_files = expand_inputs(spec.inputs, str(path))
    except InputError as e:
        raise SpecError(str(e)) from None
    _check_output_apart(job, path)
    check_rule_columns(job)
    if job.tokenizer:
        try:
            load_tokenizer(job.tokenizer)
        except TokenizerError as e:
            raise SpecError(f"{path}: tokenizer: {str(e).removeprefix('--tokenizer ')}") from None
    return job


def _nested(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _overlaps(item: str, out: Path) -> bool:
    """Whether the input `item` (file, folder or glob) is, holds or lies inside the folder `out`
    (resolved). A glob counts when it could match such a path, now or once the run has written."""
    p = Path(os.path.expanduser(item))
    p = p if p.is_absolute() else Path.cwd() / p
    if not glob.has_magic(str(p)):
        return _nested(p.resolve(), out)
    parts = p.parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:fixed]).resolve()
    if "**" in parts[fixed:]:  # reaches any depth below its fixed folder
        return _nested(base, out)
    if any(_nested(Path(m).resolve(), out) for m in glob.glob(str(p))):
        return True
    pattern = base.parts + parts[fixed:]  # component by component, as glob matches
    return all(fnmatch.fnmatchcase(o, q) for o, q in zip(out.parts, pattern))


def _check_output_apart(job: Job, path: Path) -> None:
    """Refuse an output folder that is, lies inside or holds an input: a resumed run would read its
    own output, and `--restart` would delete input. Symlinks and `..` are resolved first."""
    out = job.output.resolve()
    for i, item in enumerate(job.spec.inputs):
        if _overlaps(item, out):
            raise SpecError(f"{path}: output: the output folder {out} overlaps inputs[{i}] ({item}): it must "
                            f"not be or lie inside an input folder, nor hold an input (a run would read its "
                            f"own output, --restart would delete input); choose an output outside the inputs")
    for f in job.input_files:
        if out in f.parents:
            raise SpecError(f"{path}: output: the output folder {out} holds the input file {f} "
                            f"(--restart would delete it); choose an output outside the inputs")


# Columns every row has besides the input's own.
ENGINE_COLUMNS = frozenset({"id", "text", "input_file", "input_row"})


def check_rule_columns(job: Job) -> None:
    """Every column a keep rule reads must exist when the rule runs: in the inputs (their schemas,
    or the keys of their first JSON lines) or among the outputs of its stage and the stages before
    it. A misspelt column fails here, naming the rule and the closest column, before Ray starts."""
    fields = job.spec.fields
    renamed = {fields.text: "text", **({fields.id: "id"} if fields.id else {})}
    outputs = {c for p in job.stages for c in p.stage.output_columns()}
    have = set(ENGINE_COLUMNS)
    for f in job.input_files:
        cols = input_columns(f)
        moved = reserved_renames(cols, fields.text, fields.id, outputs)  # as the readers rename them
        have |= {renamed.get(c, moved.get(c, c)) for c in cols}
    for p in job.stages:
        have |= set(p.stage.output_columns())
        for rule in compile_rules(p.rules):
            for col in sorted(rule.columns - have):
                close = difflib.get_close_matches(col, sorted(have), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f"; columns here: {sorted(have)}"
                where = f"stages[{p.index}].keep" if p.index >= 0 else f"stage {p.name!r}"
                text = rule.text if len(rule.text) <= 80 else rule.text[:77] + "..."
                raise SpecError(f"{job.source}: {where}: rule {rule.reason!r} ({text}) reads column "
                                f"{col!r}, which neither the inputs nor stage {p.name!r} or the stages "
                                f"before it provide{hint}")
