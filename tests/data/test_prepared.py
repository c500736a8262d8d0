"""prepare_task: the one place where a pipeline's rows are chosen, tokenized and the validation halves cut."""
from __future__ import annotations

from mft_engine.data import load_splits, prepare_task, select_samples, validation_halves

from ..cli.test_bad_input import sst2_folder


class Where:
    def __init__(self, data_dir):
        self.task, self.data_dir = "sst2", str(data_dir)
        self.text_column = self.text_pair_column = self.label_column = None


def tokenizer():
    from mft_engine.models import load_model

    return load_model("bert-tiny-random", 2).tokenizer


def test_rows_tokens_and_halves(tmp_path):
    splits = load_splits(Where(sst2_folder(tmp_path / "g")))
    tok = tokenizer()
    p = prepare_task(splits, tok, samples=6, sample_order="seeded", seed=3, max_length=16)
    assert p.rows == select_samples(len(splits.train), 6, order="seeded", seed=3)
    assert [p.train_tokens.lengths[r] > 0 for r in range(len(splits.train))] == \
        [r in set(p.rows) for r in range(len(splits.train))]
    assert all(n > 0 for n in p.val_tokens.lengths)
    assert (p.scoring_rows, p.evaluation_rows) == validation_halves(len(splits.val), 3)
    assert sorted(p.scoring_rows + p.evaluation_rows) == list(range(len(splits.val)))


def test_as_subset_indexes_the_chosen_rows_in_order(tmp_path):
    splits = load_splits(Where(sst2_folder(tmp_path / "g")))
    p = prepare_task(splits, tokenizer(), samples=5, sample_order="seeded", seed=1, max_length=16, as_subset=True)
    chosen = select_samples(len(splits.train), 5, order="seeded", seed=1)
    assert p.rows == list(range(5)) and p.train.texts == [splits.train.texts[r] for r in chosen]
    assert all(n > 0 for n in p.train_tokens.lengths)
