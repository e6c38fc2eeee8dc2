import numpy as np
import polars as pl
import pytest

from physiofm.train.metrics import binary_metrics, summarize
from physiofm.train.protocols import make_folds


@pytest.fixture()
def manifest():
    rows = [
        {"subject_id": f"s{s}", "trial": t, "window_index": w, "record_id": f"s{s}_t{t}"}
        for s in range(4)
        for t in range(1, 7)
        for w in range(3)
    ]
    return pl.DataFrame(rows)


def groups(manifest, rows):
    return set(zip(manifest["subject_id"].gather(rows), manifest["trial"].gather(rows)))


@pytest.mark.parametrize("protocol, k, n_folds", [("loso", 0, 4), ("kfold-subject", 2, 2), ("kfold-trial", 3, 3)])
def test_every_row_is_tested_once_and_trials_never_straddle(manifest, protocol, k, n_folds):
    folds = make_folds(manifest, protocol, k=k, seed=1)
    assert len(folds) == n_folds
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(manifest.height))
    for fold in folds:
        assert len(np.intersect1d(fold.train, fold.test)) == 0
        assert len(fold.train) + len(fold.test) == manifest.height
        assert not groups(manifest, fold.train) & groups(manifest, fold.test)
        train_subjects = set(manifest["subject_id"].gather(fold.train))
        test_subjects = set(manifest["subject_id"].gather(fold.test))
        if protocol == "kfold-trial":
            assert train_subjects == test_subjects == {"s0", "s1", "s2", "s3"}  # subject-dependent
        else:
            assert not train_subjects & test_subjects  # subject-independent


def test_folds_are_deterministic_and_validated(manifest):
    a = make_folds(manifest, "kfold-trial", k=3, seed=5)
    b = make_folds(manifest, "kfold-trial", k=3, seed=5)
    assert all((x.test == y.test).all() for x, y in zip(a, b))
    with pytest.raises(ValueError, match="only 6 trials"):
        make_folds(manifest, "kfold-trial", k=7)
    with pytest.raises(ValueError, match="unknown protocol"):
        make_folds(manifest, "random")


def test_binary_metrics_and_summary():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.6, 0.8, 0.4, 0.9, 0.2])
    m = binary_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(8 / 9) and m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 / 3) and m["balanced_accuracy"] == pytest.approx(2 / 3)
    single = binary_metrics(np.ones(3), np.array([0.2, 0.7, 0.9]))
    assert np.isnan(single["roc_auc"]) and single["accuracy"] == pytest.approx(2 / 3)
    s = summarize([{"v": m}, {"v": single}])
    assert s["v"]["roc_auc"]["folds"] == 1 and s["v"]["accuracy"]["mean"] == pytest.approx(2 / 3)
