"""The task registry: ids, aliases, formats, metrics, and registration rules."""

from __future__ import annotations

import pytest

from mft_engine.data import TaskSpec, get_task, register_task, task_names
from mft_engine.errors import ConfigError

GLUE = ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]


def test_every_glue_task_is_registered():
    assert set(GLUE) <= set(task_names())


@pytest.mark.parametrize("spelling", ["sst2", "sst-2", "SST-2", "Sst_2"])
def test_task_id_spellings(spelling):
    assert get_task(spelling).name == "sst2"


def test_formats_and_metrics():
    assert get_task("STS-B").is_regression and get_task("stsb").loss == "mse"
    assert get_task("stsb").metrics == ("pearson", "spearman") and get_task("stsb").num_labels == 1
    assert get_task("mrpc").metrics == ("accuracy", "f1") == get_task("qqp").metrics
    assert get_task("cola").metrics == ("mcc",)
    for name in ("sst2", "mnli", "qnli", "rte", "wnli"):
        assert get_task(name).metrics == ("accuracy",)
    cola = get_task("cola")
    assert cola.headerless and cola.columns == ("source", "label", "original_label", "sentence")
    assert get_task("mrpc").text_columns == ("#1 String", "#2 String")
    assert get_task("mrpc").label_column == "Quality"
    assert get_task("qqp").text_columns == ("question1", "question2")
    mnli = get_task("mnli")
    assert set(mnli.labels) == {"contradiction", "entailment", "neutral"} and mnli.num_labels == 3
    assert mnli.files["validation"] == "dev_matched.tsv"
    assert mnli.files["validation_mismatched"] == "dev_mismatched.tsv"
    assert mnli.hub_split("validation") == "validation_matched"
    assert get_task("qnli").labels == ("entailment", "not_entailment") == get_task("rte").labels
    assert get_task("wnli").labels == ("0", "1")


def test_unknown_task_and_split_name_the_choices():
    with pytest.raises(ConfigError, match=r"unknown task 'nope'.*sst2"):
        get_task("nope")
    with pytest.raises(ConfigError, match=r"no split 'test'.*train"):
        get_task("sst2").canonical_split("test")


def _spec(name, **kw):
    base = dict(glue_dir="X", files={"train": "t.tsv", "validation": "d.tsv"}, text_columns=("text",),
                label_column="label", labels=("a", "b"), metrics=("accuracy",))
    base.update(kw)
    return TaskSpec(name=name, **base)


def test_register_task_checks_unique_lowercase_names():
    spec = register_task(_spec("toy_task", aliases=("toy-alias",)))
    try:
        assert get_task("TOY-TASK") is spec and get_task("toy_alias") is spec
        with pytest.raises(ConfigError, match="already registered"):
            register_task(_spec("toy_task"))
        with pytest.raises(ConfigError, match="already registered"):
            register_task(_spec("sst_2"))  # the same id as sst2 once '-'/'_' are dropped
        replaced = register_task(_spec("toy_task", labels=("x", "y")), overwrite=True)
        assert get_task("toy_task") is replaced
    finally:
        from mft_engine.data import tasks

        tasks._REGISTRY.pop("toy_task", None)
        for key in [k for k, v in tasks._ALIASES.items() if v == "toy_task"]:
            del tasks._ALIASES[key]
    with pytest.raises(ConfigError, match="lowercase"):
        _spec("Upper")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(text_columns=("a", "b", "c")), "text columns"),
        (dict(files={"train": "t.tsv"}), "validation"),
        (dict(labels=("a",)), "two or more"),
        (dict(metrics=("bleu",)), "metrics"),
        (dict(headerless=True), "header-less"),
    ],
)
def test_spec_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        _spec("bad", **kw)
