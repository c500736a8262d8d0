import numpy as np
import pytest

from mft_engine.evaluate import classification_metrics, regression_metrics

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_classification_against_sklearn(k, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, k, 200)
    p = np.where(rng.random(200) < 0.7, t, rng.integers(0, k, 200))
    m = classification_metrics(t, p, k)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(t, p))
    assert m["mcc"] == pytest.approx(sk.matthews_corrcoef(t, p))
    avg = "binary" if k == 2 else "macro"
    assert m["f1"] == pytest.approx(sk.f1_score(t, p, average=avg, zero_division=0))
    assert m["precision"] == pytest.approx(sk.precision_score(t, p, average=avg, zero_division=0))
    assert m["recall"] == pytest.approx(sk.recall_score(t, p, average=avg, zero_division=0))
    assert m["confusion_matrix"] == sk.confusion_matrix(t, p, labels=list(range(k))).tolist()


def test_degenerate_all_one_class():
    m = classification_metrics([0, 1, 1, 0], [1, 1, 1, 1], 2)
    assert m["recall"] == 1.0 and m["recall_per_class"] == [0.0, 1.0]
    assert m["mcc"] == 0.0 == sk.matthews_corrcoef([0, 1, 1, 0], [1, 1, 1, 1])


def test_regression_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    t = np.round(rng.random(100) * 5, 1)
    p = t + rng.normal(0, 1, 100)
    m = regression_metrics(t, p)
    assert m["pearson"] == pytest.approx(stats.pearsonr(t, p)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(t, p)[0])
