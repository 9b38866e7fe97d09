"""One contract over every registered stage (like scikit-learn's `parametrize_with_checks`)."""
import pickle

import pyarrow as pa
import pytest

from tamis.pipeline.rules import compile_rules
from tamis.pipeline.registry import stage_class, stage_names
from tamis.pipeline.stage import GlobalStage, Scorer

BATCH = pa.table({
    "id": ["a", "b", "c"],
    "text": ["The cat sat on the mat and it was happy with that.\nIt is a good mat.", "",
             "Rain, rain, go away; come again another day. " * 20],
    "domain": ["x", "y", "x"], "license": ["MIT", "MIT", "PD"], "source": ["s", "s", "t"],
    "url": ["https://www.Example.org:443/a", None, "not a url"],
}).cast(pa.schema([("id", pa.string()), ("text", pa.large_string()), ("domain", pa.string()),
                   ("license", pa.string()), ("source", pa.string()), ("url", pa.string())]))
# The parameters a stage cannot do without (no model path can be made up here: those are skipped)
REQUIRED = {"url_filter": {"blocklist": None}}


@pytest.mark.parametrize("name", stage_names())
def test_registered_class_contract(name):
    cls = stage_class(name)
    assert issubclass(cls, (Scorer, GlobalStage)) and cls.name == name
    # one naming convention: the class is the `use:` name in CamelCase, no suffix
    assert cls.__name__.lower() == name.replace("_", ""), (name, cls.__name__)
    assert cls.__doc__ and cls.__doc__.strip(), f"{name} has no docstring"
    for col, t in cls.columns.items():
        assert isinstance(t, pa.DataType), f"{name}.{col}"
    compile_rules(cls.default_keep)
    params = cls.param_names()
    assert "self" not in params


def _constructible(cls):
    try:
        return cls(**REQUIRED.get(cls.name, {}))
    except TypeError:
        return None


@pytest.mark.parametrize("name", stage_names())
def test_stage_stores_params_pickles_and_rules_use_own_or_input_columns(name):
    cls = stage_class(name)
    stage = _constructible(cls)
    if stage is None:
        pytest.skip(f"{name} needs parameters (model paths, eval sets)")
    assert set(stage.get_params()) == set(cls.param_names())
    clone = pickle.loads(pickle.dumps(stage))
    assert clone.get_params() == stage.get_params()
    cols = set(stage.output_columns()) | set(BATCH.column_names)
    for rule in compile_rules(stage.default_rules()):
        assert rule.columns <= cols | {"lang", "lang_score", "ppl"}, (name, rule.text)


STATELESS = sorted(n for n in stage_names() if issubclass(stage_class(n), Scorer)
                   and not stage_class(n).is_stateful() and _constructible(stage_class(n)) is not None)


@pytest.mark.parametrize("name", STATELESS)
def test_stateless_scorer_output_shape(name):
    stage = _constructible(stage_class(name))
    # an editor (`Editor`) also returns the new `text`
    declared = {**({"text": pa.large_string()} if stage.edits_text else {}), **stage.output_columns()}
    for batch in (BATCH, BATCH.slice(0, 0)):
        out = stage.score(batch)
        assert set(out) == set(declared)
        for col, arr in out.items():
            assert len(arr) == batch.num_rows, (name, col)
            assert arr.type == declared[col], (name, col, arr.type)
