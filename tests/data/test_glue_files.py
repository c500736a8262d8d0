"""Reading every GLUE task's real file format, and the errors for bad folders and files."""

from __future__ import annotations

import pytest

from .conftest import write_glue
from mft_engine.data import find_task_dir, load_task, read_glue_file, read_glue_split
from mft_engine.errors import DataError, DataNotFoundError, MftError

# task -> split -> (texts, pairs or None, labels)
EXPECTED = {
    "cola": {
        "train": (["Our friends won't buy this analysis, let alone the next one we propose.", "They drank the pub ."],
                  None, [1, 0]),
        "validation": (['The "sailors" rode the horse .'], None, [1]),
    },
    "sst2": {
        "train": (["hide new secretions from the parental units", 'the " best " film of the year'], None, [0, 1]),
        "validation": (["it 's a charming and often affecting journey ."], None, [1]),
    },
    "mrpc": {
        "train": (
            ['Amrozi accused his brother , whom he called " the witness " .', "Yucaipa owned Dominick 's ."],
            ['Referring to him as only " the witness " , Amrozi accused his brother .',
             "Yucaipa bought Dominick 's in 1995 ."],
            [1, 0],
        ),
        "validation": (["He said the pie business doesn 't fit ."], ['" The pie business does not fit .'], [1]),
    },
    "qqp": {
        "train": (["How is the life of a math student?", 'How do I control my "horny" emotions?'],
                  ["Which level of prepration is enough?", "How do you control your horniness?"], [0, 1]),
        "validation": (["Why are people so obsessed with Cara?"], ["Why are people obsessed with Cara?"], [1]),
    },
    "stsb": {
        "train": (["A plane is taking off.", "A man plays a flute."],
                  ["An air plane is taking off.", "A man plays a bamboo flute."], [5.0, 3.8]),
        "validation": (["A man with a hard hat is dancing."], ["A man wearing a hard hat is dancing."], [0.25]),
    },
    "mnli": {
        "train": (["Conceptually cream skimming has two basic dimensions ."],
                  ["Product and geography are what make it work."], [1]),
        "validation": (["The new rights are nice enough", "This site includes a list"],
                       ["Everyone really likes the newest benefits", "The site does not include it"], [1, 2]),
        "validation_mismatched": (["Your contribution helped"], ["Your contributions were of no help"], [0]),
    },
    "qnli": {
        "train": (["When did the third Digimon series begin?"],
                  ["Unlike the two seasons before it , it was darker ."], [1]),
        "validation": (["What came into force after the new constitution?"], ["The law came into force ."], [0]),
    },
    "rte": {
        "train": (["No Weapons of Mass Destruction Found in Iraq Yet."],
                  ["Weapons of Mass Destruction Found in Iraq."], [1]),
        "validation": (["Dana Reeve, the widow of the actor, died.", 'Yet, we now are discovering "something".'],
                       ["Christopher Reeve had an accident.", "Bacteria is winning the war."], [1, 0]),
    },
    "wnli": {
        "train": (["I stuck a pin through a carrot."], ["The carrot had a hole."], [1]),
        "validation": (["The drain is clogged with hair."], ["The hair has to be removed."], [0]),
    },
}
CASES = [(task, split) for task, splits in EXPECTED.items() for split in splits]


@pytest.mark.parametrize("task,split", CASES)
def test_every_task_reads_its_real_format(glue_root, task, split):
    texts, pairs, labels = EXPECTED[task][split]
    data = load_task(task, split, data_dir=glue_root)
    assert data.texts == texts
    assert data.text_pairs == pairs
    assert data.labels == labels
    assert data.row_ids == list(range(len(texts)))
    assert data.split == split
    assert data.task.name == task
    assert data.source.startswith(str(glue_root)) and data.source.endswith(".tsv")
    assert all(type(x) is (float if task == "stsb" else int) for x in data.labels)


def test_mnli_dev_files_and_default_validation(glue_root):
    assert load_task("mnli", "validation", glue_root).source.endswith("dev_matched.tsv")
    assert load_task("MNLI", "dev_matched", glue_root).source.endswith("dev_matched.tsv")
    assert load_task("mnli", "dev-mismatched", glue_root).source.endswith("dev_mismatched.tsv")


def test_task_folder_itself_and_loose_folder_names(glue_root, tmp_path):
    direct = load_task("sst-2", "train", data_dir=glue_root / "SST-2")
    assert direct.texts == EXPECTED["sst2"]["train"][0]
    write_glue(tmp_path / "lower", {"sst2": {"dev.tsv": "sentence\tlabel\nfine \t1\n"}})
    assert load_task("SST-2", "dev", tmp_path / "lower").texts == ["fine"]
    # A different task's folder is not mistaken for this task's.
    assert find_task_dir(glue_root / "MRPC", "sst2") is None
    assert find_task_dir(glue_root / "MRPC", "mrpc") == glue_root / "MRPC"


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes(b"sentence\tlabel\r\na \"quoted\" one \t1\r\nplain \t0\r\n\r\n")
    data = read_glue_file(path, "sst2", "dev")
    assert data.texts == ['a "quoted" one', "plain"] and data.labels == [1, 0]


def _one_file(tmp_path, folder, name, text):
    write_glue(tmp_path, {folder: {name: text}})
    return tmp_path / folder / name


def test_malformed_row_names_file_and_line(tmp_path):
    path = _one_file(tmp_path, "SST-2", "train.tsv", "sentence\tlabel\ngood \t1\nbad\trow\t0\n")
    with pytest.raises(DataError, match=r"line 3 has 3 .*expected 2") as info:
        load_task("sst2", "train", tmp_path)
    assert str(path) in str(info.value)


def test_malformed_headerless_cola_row(tmp_path):
    _one_file(tmp_path, "CoLA", "train.tsv", "gj04\t1\t\tFine .\ngj04\t1\tMissing a column .\n")
    with pytest.raises(DataError, match=r"CoLA/train.tsv line 2 has 3"):
        load_task("cola", "train", tmp_path)


def test_unknown_label_names_label_file_and_line(tmp_path):
    path = _one_file(tmp_path, "RTE", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"line 2 has unknown label 'maybe'") as info:
        load_task("rte", "dev", tmp_path)
    assert str(path) in str(info.value)


def test_non_numeric_score(tmp_path):
    text = GLUE_STSB_HEADER + "0\tg\tf\ty\to\ts\ts\ta\tb\tfive\n"
    _one_file(tmp_path, "STS-B", "train.tsv", text)
    with pytest.raises(DataError, match=r"line 2 has score 'five'"):
        load_task("stsb", "train", tmp_path)


GLUE_STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"


@pytest.mark.parametrize("content", ["sentence\tlabel\n\n\n", ""])
def test_empty_split(tmp_path, content):
    path = _one_file(tmp_path, "SST-2", "dev.tsv", content)
    with pytest.raises(DataError, match=r"empty|no data rows") as info:
        load_task("sst2", "validation", tmp_path)
    assert str(path) in str(info.value)


def test_header_without_needed_column(tmp_path):
    _one_file(tmp_path, "SST-2", "train.tsv", "text\tlabel\nhello\t1\n")
    with pytest.raises(DataError, match=r"no column 'sentence'"):
        load_task("sst2", "train", tmp_path)


def test_missing_folder_file_and_root(tmp_path):
    with pytest.raises(DataNotFoundError, match="RTE") as info:
        load_task("rte", "train", tmp_path)
    assert str(tmp_path) in str(info.value)
    _one_file(tmp_path, "RTE", "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(DataNotFoundError) as info:
        load_task("rte", "validation", tmp_path)
    assert str(tmp_path / "RTE" / "dev.tsv") in str(info.value)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError, match="does not exist") as info:
        read_glue_split(missing, "rte")
    assert str(missing) in str(info.value)
    # The errors are also the built-ins callers may catch.
    assert issubclass(DataNotFoundError, FileNotFoundError) and issubclass(DataError, ValueError)
    assert isinstance(info.value, MftError)


def test_not_utf8(tmp_path):
    path = tmp_path / "SST-2" / "train.tsv"
    path.parent.mkdir()
    path.write_bytes(b"sentence\tlabel\ncaf\xe9 \t1\n")
    with pytest.raises(DataError, match="UTF-8"):
        load_task("sst2", "train", tmp_path)
