"""Fixtures for the data tests: small GLUE folders in each task's real format, written per test."""

from __future__ import annotations

from pathlib import Path

import pytest

# Rows in the layouts of the files written by GLUE's download_glue_data.py. Quotes inside sentences are
# deliberate (unbalanced, as in MRPC and SST-2), as are SST-2's trailing spaces and MRPC's BOM.
GLUE_FILES: dict[str, dict[str, str]] = {
    "CoLA": {
        "train.tsv": "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
        "gj04\t0\t*\tThey drank the pub .\n",
        "dev.tsv": 'bc01\t1\t\tThe "sailors" rode the horse .\n\n',
    },
    "SST-2": {
        "train.tsv": "sentence\tlabel\nhide new secretions from the parental units \t0\n"
        'the " best " film of the year \t1\n',
        "dev.tsv": "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n\n\n",
    },
    "MRPC": {
        "train.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t702876\t702977\tAmrozi accused his brother , whom he called " the witness " .\t'
        'Referring to him as only " the witness " , Amrozi accused his brother .\n'
        "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 .\n",
        "dev.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t1355540\t1355592\tHe said the pie business doesn \'t fit .\t" The pie business does not fit .\n',
    },
    "QQP": {
        "train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration is enough?\t0\n"
        '402555\t536040\t536041\tHow do I control my "horny" emotions?\tHow do you control your horniness?\t1\n',
        "dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "1\t2\t3\tWhy are people so obsessed with Cara?\tWhy are people obsessed with Cara?\t1\n",
    },
    "STS-B": {
        "train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n"
        "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays a flute.\tA man plays a bamboo flute.\t3.800\n",
        "dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\t"
        "A man wearing a hard hat is dancing.\t0.250\n",
    },
    "MNLI": {
        "train.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
        "0\t31193\t31193n\tgovernment\t( ( a ) )\t( ( b ) )\t(ROOT a)\t(ROOT b)\t"
        "Conceptually cream skimming has two basic dimensions .\tProduct and geography are what make it work.\t"
        "neutral\tneutral\n",
        "dev_matched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
        "0\t63735\t63735n\tslate\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tThe new rights are nice enough\t"
        "Everyone really likes the newest benefits\tneutral\tentailment\tneutral\tneutral\tneutral\tneutral\n"
        "1\t91383\t91383c\tgovernment\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tThis site includes a list\t"
        "The site does not include it\tcontradiction\tcontradiction\tcontradiction\tcontradiction\t"
        "contradiction\tcontradiction\n",
        "dev_mismatched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
        "0\t75290\t75290c\tletters\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tYour contribution helped\t"
        "Your contributions were of no help\tcontradiction\tcontradiction\tcontradiction\tcontradiction\t"
        "contradiction\tentailment\n",
    },
    "QNLI": {
        "train.tsv": "index\tquestion\tsentence\tlabel\n"
        "0\tWhen did the third Digimon series begin?\tUnlike the two seasons before it , it was darker .\tnot_entailment\n",
        "dev.tsv": "index\tquestion\tsentence\tlabel\n"
        "0\tWhat came into force after the new constitution?\tThe law came into force .\tentailment\n",
    },
    "RTE": {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n"
        "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\t"
        "not_entailment\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n"
        "0\tDana Reeve, the widow of the actor, died.\tChristopher Reeve had an accident.\tnot_entailment\n"
        "1\tYet, we now are discovering \"something\".\tBacteria is winning the war.\tentailment\n",
    },
    "WNLI": {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n"
        "0\tI stuck a pin through a carrot.\tThe carrot had a hole.\t1\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n"
        "0\tThe drain is clogged with hair.\tThe hair has to be removed.\t0\n",
    },
}


def write_glue(root: Path, folders: dict[str, dict[str, str]] | None = None) -> Path:
    """Write GLUE folders (default: every task above) under `root` as bytes, exactly as given."""
    for folder, files in (folders or GLUE_FILES).items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (root / folder / name).write_bytes(text.encode("utf-8"))
    return root


@pytest.fixture
def glue_root(tmp_path: Path) -> Path:
    """A GLUE root with every task's train and dev files in the real layouts."""
    return write_glue(tmp_path / "glue")


@pytest.fixture(autouse=True)
def _no_ambient_sources(monkeypatch):
    # Tests must not see the developer's own data folder or reach the network.
    monkeypatch.delenv("MFT_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
