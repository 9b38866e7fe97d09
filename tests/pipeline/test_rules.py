import polars as pl
import pytest

from pipeline.rules import RuleError, compile_rule, compile_rules, first_failure

DF = pl.DataFrame({"a": [1, 5, None, 10], "lang": ["en", "fr", "en", "de"], "d": [None, "x", None, None],
                   "t": ["hello", "", "abc", "wxyz"]})


def reasons(rules):
    return first_failure(DF, compile_rules(rules)).to_list()


def test_first_failing_rule_wins_and_null_rejects():
    assert reasons({"small": "a < 8", "fr": "lang != 'fr'"}) == [None, "fr", "small", "small"]


def test_in_is_none_len_and_boolean_ops():
    assert reasons({"lang": "lang in ['en', 'de']"}) == [None, "lang", None, None]
    assert reasons({"dup": "d is None"}) == [None, "dup", None, None]
    assert reasons({"empty": "len(t) > 0 and not (a == 10)"}) == [None, "empty", "empty", "empty"]
    assert reasons({"c": "coalesce(a, 0) * 2 >= 2"}) == [None, None, "c", None]


def test_reason_template_names_value():
    assert reasons({"lang_{lang}": "lang == 'en'"}) == [None, "lang_fr", None, "lang_de"]


@pytest.mark.parametrize("bad", ["a <", "__import__('os')", "a.b > 1", "lang in x", "a is 3", ""])
def test_bad_rules_raise_with_rule_text(bad):
    with pytest.raises(RuleError):
        compile_rule("r", bad)


def test_unknown_column_is_named():
    with pytest.raises(RuleError, match="nope"):
        first_failure(DF, compile_rules({"r": "nope > 1"}))
