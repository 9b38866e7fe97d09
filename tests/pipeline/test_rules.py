import polars as pl
import pytest

from tamis.pipeline.rules import RuleError, compile_rule, compile_rules, first_failure

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


@pytest.mark.parametrize("text, why", [("a > " + "-" * 100_000 + "1", "100,005 characters long"),
                                       ("a > " + "-" * 2_000 + "1", "nested deeper than the limit of 64"),
                                       ("a > " + "(" * 300 + "1" + ")" * 300, "cannot parse"),
                                       ("a > " + " + ".join(["1"] * 70), "nested deeper")])
def test_pathological_rules_are_refused_by_name(text, why):
    """Long or deep rules are a clear RuleError (rule named, text cut short), never a parser crash."""
    with pytest.raises(RuleError, match=why) as e:
        compile_rule("huge", text)
    assert "'huge'" in str(e.value) and len(str(e.value)) < 400


def test_rules_within_the_limits_still_compile():
    from tamis.pipeline.rules import MAX_RULE_CHARS, MAX_RULE_DEPTH

    assert MAX_RULE_CHARS == 10_000 and MAX_RULE_DEPTH == 64
    wide = "lang in [" + ", ".join(f"'l{i}'" for i in range(1000)) + "]"  # long but shallow
    assert len(wide) < MAX_RULE_CHARS and compile_rule("wide", wide).columns == {"lang"}
    assert reasons({"neg": "a > " + "-" * 40 + "1"}) == ["neg", None, "neg", None]  # a > 1
