"""Evaluation on any labelled store: protocols with validation splits, nested label fractions, the fixed label
vocabulary, metrics with thresholds and intervals, and linear probes against random encoders end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from physiofm.train.finetune import FinetuneConfig, cells, finetune
from physiofm.train.labels import read_labels, resolve_labels
from physiofm.train.metrics import (
    average_precision,
    bootstrap_ci,
    choose_threshold,
    evaluate,
    point_scores,
    roc_auc,
)
from physiofm.train.protocols import label_subsets, make_folds, subjects


@pytest.fixture()
def emotion_like():
    rows = [
        {"subject_id": f"s{s}", "trial": t, "window_index": w, "record_id": f"s{s}_t{t}"}
        for s in range(6)
        for t in range(1, 7)
        for w in range(2)
    ]
    return pl.DataFrame(rows)


@pytest.fixture()
def ptbxl_like():
    rng = np.random.default_rng(0)
    rows = []
    for patient in range(120):
        fold = int(rng.integers(1, 11))
        for record in range(int(rng.integers(1, 4))):
            rows.append({"subject_id": str(patient), "record_id": f"{patient}_{record}", "fold": fold})
    return pl.DataFrame(rows)


def _who(manifest, rows, column="subject_id"):
    return set(manifest[column].gather(rows).to_list())


@pytest.mark.parametrize("protocol, k", [("loso", 0), ("kfold-subject", 3), ("ptbxl", 0)])
def test_no_subject_in_two_of_train_validation_and_test(emotion_like, ptbxl_like, protocol, k):
    manifest = ptbxl_like if protocol == "ptbxl" else emotion_like
    folds = make_folds(manifest, protocol, k=k, seed=3, val_fraction=0.25)
    for fold in folds:
        assert len(fold.val) and len(fold.train) and len(fold.test)
        parts = [fold.train, fold.val, fold.test]
        assert sorted(np.concatenate(parts).tolist()) == list(range(manifest.height))  # a partition of the rows
        train, val, test = (_who(manifest, p) for p in parts)
        assert not train & val and not train & test and not val & test
    if protocol == "ptbxl":
        (fold,) = folds
        assert set(manifest["fold"].gather(fold.train)) <= set(range(1, 9))
        assert set(manifest["fold"].gather(fold.val)) == {9} and set(manifest["fold"].gather(fold.test)) == {10}
    else:
        tested = np.concatenate([f.test for f in folds])
        assert sorted(tested.tolist()) == list(range(manifest.height))  # every row tested once


def test_subject_dependent_protocol_validates_on_whole_trials(emotion_like):
    for fold in make_folds(emotion_like, "kfold-trial", k=3, seed=1, val_fraction=0.2):
        trials = [_who(emotion_like, p, "record_id") for p in (fold.train, fold.val, fold.test)]
        assert not trials[0] & trials[1] and not trials[0] & trials[2] and not trials[1] & trials[2]
        assert _who(emotion_like, fold.val) == _who(emotion_like, fold.train)  # every subject keeps some of each


def test_validation_never_changes_the_test_rows(emotion_like):
    plain = make_folds(emotion_like, "kfold-subject", k=3, seed=5)
    validated = make_folds(emotion_like, "kfold-subject", k=3, seed=5, val_fraction=0.3)
    for a, b in zip(plain, validated):
        assert np.array_equal(a.test, b.test) and not len(a.val)
        assert sorted(np.concatenate([b.train, b.val]).tolist()) == sorted(a.train.tolist())


def test_ptbxl_protocol_checks_its_fold_column(ptbxl_like):
    crossing = pl.concat([ptbxl_like, pl.DataFrame({"subject_id": ["x", "x"], "record_id": ["x_0", "x_1"],
                                                    "fold": [3, 10]})])  # fmt: skip
    with pytest.raises(ValueError, match="patient-wise"):
        make_folds(crossing, "ptbxl")
    with pytest.raises(ValueError, match="fold column"):
        make_folds(ptbxl_like.drop("fold"), "ptbxl")


def test_split_protocol_follows_the_corpus_split_and_checks_it():
    """TUAB-style train/eval folders: eval tests, train trains, validation is whole train subjects (or dev rows)."""
    rows = [{"subject_id": f"s{s}", "record_id": f"s{s}_{r}", "split": "eval" if s % 3 == 2 else "train"}
            for s in range(12) for r in range(2)]  # fmt: skip
    manifest = pl.DataFrame(rows)
    (fold,) = make_folds(manifest, "split", seed=0, val_fraction=0.25)
    assert set(manifest["split"].gather(fold.test)) == {"eval"} and len(fold.test) == 8
    assert set(manifest["split"].gather(np.concatenate([fold.train, fold.val]))) == {"train"}
    train, val, test = (_who(manifest, p) for p in (fold.train, fold.val, fold.test))
    assert len(val) == 2 and not train & val and not train & test and not val & test
    dev = manifest.with_columns(pl.when(pl.col("subject_id") == "s0").then(pl.lit("dev")).otherwise("split")
                                .alias("split"))  # fmt: skip
    (fold,) = make_folds(dev, "split", seed=0, val_fraction=0.25)
    assert _who(dev, fold.val) == {"s0"}  # the corpus's own validation rows, none drawn
    crossing = pl.concat([manifest, pl.DataFrame({"subject_id": ["s0"], "record_id": ["s0_9"], "split": ["eval"]})])
    with pytest.raises(ValueError, match="not subject-wise"):
        make_folds(crossing, "split")
    with pytest.raises(ValueError, match="split column"):
        make_folds(manifest.drop("split"), "split")
    with pytest.raises(ValueError, match="none of"):
        make_folds(manifest.with_columns(pl.lit("holdout").alias("split")), "split")


def test_stratified_validation_keeps_every_class_of_the_training_subjects():
    """One label per subject (TUAB's normal/abnormal): with strata, every fold's validation subjects hold both
    classes; the draw stays subject-wise and leaves the test rows as they were."""
    rows = [{"subject_id": f"s{s}", "record_id": f"s{s}_{r}"} for s in range(16) for r in range(3)]
    manifest = pl.DataFrame(rows)
    label = np.array([int(r["subject_id"][1:]) % 2 for r in rows])
    plain = make_folds(manifest, "kfold-subject", k=4, seed=2, val_fraction=0.2)
    mixed = make_folds(manifest, "kfold-subject", k=4, seed=2, val_fraction=0.2, strata=label)
    one_class = 0
    for a, b in zip(plain, mixed):
        assert np.array_equal(a.test, b.test)
        assert set(label[b.val]) == {0, 1} and set(label[b.train]) == {0, 1}
        assert not _who(manifest, b.val) & _who(manifest, b.train)
        one_class += len(set(label[a.val])) == 1
    assert one_class  # without strata some fold validates on one class (what the strata fix)
    with pytest.raises(ValueError, match="strata"):
        make_folds(manifest, "kfold-subject", k=4, strata=label[:-1])


def test_rows_without_subject_are_their_own_subject():
    manifest = pl.DataFrame({"subject_id": [None, None, "a", "a"], "record_id": ["r1", "r2", "r3", "r4"]})
    assert subjects(manifest).to_list() == ["record:r1", "record:r2", "a", "a"]
    folds = make_folds(manifest, "kfold-subject", k=3, seed=0)
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == [0, 1, 2, 3]
    assert any(set(f.test.tolist()) == {2, 3} for f in folds)  # subject a's rows stay together


def test_label_fractions_are_nested_subject_wise_and_seeded(ptbxl_like):
    (fold,) = make_folds(ptbxl_like, "ptbxl")
    fractions = (0.01, 0.1, 0.5, 1.0)
    for seed in (0, 1):
        subsets = label_subsets(ptbxl_like, fold.train, fractions, seed=seed)
        assert np.array_equal(np.sort(subsets[1.0]), np.sort(fold.train))
        for small, large in zip(fractions, fractions[1:]):
            assert set(subsets[small].tolist()) <= set(subsets[large].tolist())  # nested
        for f in fractions:
            chosen = subsets[f]
            assert len(chosen) >= f * len(fold.train)
            # whole subjects: every training row of a chosen subject is in
            who = _who(ptbxl_like, chosen)
            everyone = [r for r in fold.train.tolist() if ptbxl_like["subject_id"][r] in who]
            assert sorted(chosen.tolist()) == sorted(everyone)
        assert label_subsets(ptbxl_like, fold.train, fractions, seed=seed)[0.1].tolist() == subsets[0.1].tolist()
    a = label_subsets(ptbxl_like, fold.train, (0.1,), seed=0)[0.1]
    b = label_subsets(ptbxl_like, fold.train, (0.1,), seed=1)[0.1]
    assert set(a.tolist()) != set(b.tolist())
    with pytest.raises(ValueError, match="label fractions"):
        label_subsets(ptbxl_like, fold.train, (0.0,))


def test_label_vocabulary_is_fixed_by_the_whole_manifest_not_a_fold():
    manifest = pl.DataFrame(
        {
            "subject_id": ["1", "2", "3", "4", "5"],
            "codes": [["NORM"], ["MI", "CD"], [], None, ["RARE"]],
            "flag": [True, False, None, True, False],
            "rhythm": ["SR", "AF", "SR", None, "ST"],
        }
    )
    spec = resolve_labels(manifest, ["codes"])
    assert spec.kind == "multilabel" and spec.classes == ("CD", "MI", "NORM", "RARE")
    y = spec.encode(manifest)
    assert y[1].tolist() == [1, 1, 0, 0] and np.isnan(y[2]).all() and np.isnan(y[3]).all()  # empty dropped, null
    # a fold holding only the first row still predicts and reports every class of the vocabulary
    assert spec.encode(manifest[:1]).shape == (1, 4)
    fixed = resolve_labels(manifest, ["codes"], classes=["NORM", "MI", "CD", "HYP"])
    assert fixed.classes == ("NORM", "MI", "CD", "HYP") and fixed.unseen == {"RARE": 1} and fixed.counts["HYP"] == 0
    assert fixed.encode(manifest)[4].tolist() == [0, 0, 0, 0]
    kept = resolve_labels(manifest, ["codes"], drop_empty=False)
    assert kept.encode(manifest)[2].tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="at least 2 rows"):
        resolve_labels(manifest, ["codes"], min_count=2)
    binary = resolve_labels(manifest, ["flag"])
    assert binary.kind == "binary" and np.isnan(binary.encode(manifest)[2, 0])
    multi = resolve_labels(manifest, ["rhythm"])
    assert multi.kind == "multiclass" and multi.classes == ("AF", "SR", "ST")
    assert multi.encode(manifest)[0].tolist() == [0, 1, 0] and np.isnan(multi.encode(manifest)[3]).all()
    with pytest.raises(ValueError, match="one column"):
        resolve_labels(manifest, ["codes", "rhythm"])
    with pytest.raises(ValueError, match="no column"):
        resolve_labels(manifest, ["nothing"])


def test_emotion_targets_read_their_high_columns():
    manifest = pl.DataFrame({"valence": [1, 5], "valence_high": [False, True], "arousal_high": [True, True]})
    spec = resolve_labels(manifest, ["valence", "arousal"])
    assert spec.kind == "binary" and spec.columns == ("valence_high", "arousal_high")
    assert spec.classes == ("valence", "arousal") and spec.encode(manifest).tolist() == [[0, 1], [1, 1]]


def test_rank_auc_and_average_precision_match_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.random(60) < 0.3
        p = np.round(rng.random(60), 1)  # many ties
        if 0 < y.sum() < len(y):
            assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))
            assert average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p))
    assert np.isnan(roc_auc(np.ones(3, bool), np.array([0.1, 0.2, 0.3])))


def test_threshold_chosen_on_validation_maximises_f1():
    rng = np.random.default_rng(2)
    y = rng.random(200) < 0.2
    p = np.clip(0.15 + 0.3 * y + 0.2 * rng.standard_normal(200), 0, 1)
    t = choose_threshold(y, p)
    best = max(skm.f1_score(y, p >= c) for c in np.unique(p))
    assert skm.f1_score(y, p >= t) == pytest.approx(best)
    assert choose_threshold(np.zeros(5), np.linspace(0, 1, 5)) == 0.5


def test_evaluate_macro_and_bootstrap_intervals():
    rng = np.random.default_rng(3)
    true = (rng.random((300, 3)) < 0.4).astype(float)
    prob = np.clip(0.3 * true + 0.7 * rng.random((300, 3)), 0, 1)
    true[:10, 2] = np.nan  # unknown labels are left out
    scored = evaluate(true, prob, ["a", "b", "c"], thresholds=[0.5, 0.5, 0.5])
    aucs = [roc_auc(true[~np.isnan(true[:, i]), i], prob[~np.isnan(true[:, i]), i]) for i in range(3)]
    assert scored["macro"]["roc_auc"] == pytest.approx(np.mean(aucs))
    assert set(scored["per_class"]["a"]) >= {"roc_auc", "pr_auc", "f1", "accuracy", "balanced_accuracy"}
    groups = np.repeat(np.arange(100), 3)  # 100 subjects of 3 rows
    ci = bootstrap_ci(true, prob, groups, ["a", "b", "c"], n_boot=200, seed=0)
    point = point_scores(true, prob)["macro"]
    for metric in ("roc_auc", "pr_auc", "f1"):
        low, high = ci["macro"][metric]
        assert low < point[metric] < high and high - low < 0.2
    assert ci["unit"] == "subject"
    # averaging two seeds' predictions of the same rows: the interval of their mean is no wider
    twin = np.clip(prob + 0.05 * rng.standard_normal(prob.shape), 0, 1)
    both = bootstrap_ci(true, [prob, twin], groups, n_boot=200, seed=0)
    assert both["macro"]["roc_auc"][0] < point["roc_auc"] + 0.05


def test_one_class_folds_do_not_drag_the_mean():
    from physiofm.train.metrics import binary_metrics, summarize

    single = binary_metrics(np.zeros(4), np.array([0.1, 0.6, 0.2, 0.3]))
    assert np.isnan(single["roc_auc"]) and np.isnan(single["f1"])  # undefined, not 0
    good = binary_metrics(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.8, 0.2]))
    summary = summarize([{"t": single}, {"t": good}])
    assert summary["t"]["f1"]["mean"] == 1.0 and summary["t"]["f1"]["folds"] == 1


# ---- end to end on a generated PTB-XL archive ---------------------------------------------------------


@pytest.fixture(scope="module")
def ptbxl_store(tmp_path_factory):
    """A PTB-XL-layout store of 150 generated records (SCP codes shape the beats), strat_fold as `fold`."""
    from physiofm.store.build import build
    from physiofm.synth.ecg import synth_ptbxl

    root = tmp_path_factory.mktemp("ptbxl")
    src = synth_ptbxl(root / "raw", n_records=150, seed=1, rates=(100,))
    build(str(src), str(root / "store"), jobs=1, shard_size=50)
    return root / "store"


def test_cells_of_a_comparison():
    config = FinetuneConfig("s", "o", modalities=("ecg",), ecg_weights="pre", label_fractions=(0.1, 1.0), seeds=2,
                            baselines=("random", "scratch"), mode="linear")  # fmt: skip
    grid = cells(config)
    assert grid[0].encoder == "pretrained" and grid[0].fraction == 1.0 and grid[0].seed == 0
    assert {(c.encoder, c.mode) for c in grid} == {("pretrained", "linear"), ("random", "linear"), ("scratch", "full")}
    assert len(grid) == 3 * 2 * 2
    alone = cells(FinetuneConfig("s", "o", modalities=("ecg",), baselines=("random", "scratch")))
    assert [(c.encoder, c.mode) for c in alone] == [("random", "full")]  # random + full is already scratch


def test_linear_probe_on_ptbxl_with_a_fixed_vocabulary(ptbxl_store, ecg_store, tmp_path):
    from physiofm.train.pretrain import PretrainConfig, pretrain

    pretrain(PretrainConfig(str(ecg_store), str(tmp_path / "pre"), max_steps=3, batch_size=4, checkpoint_every=3,
                            model={"n_layer": 1}, seed=0))  # fmt: skip
    manifest = pl.read_parquet(ptbxl_store / "manifest.parquet")
    vocabulary = ("NORM", "MI", "STTC", "CD", "HYP", "ABSENT")
    out = tmp_path / "probe"
    config = FinetuneConfig(str(ptbxl_store), str(out), modalities=("ecg",), targets=("ptbxl_superclass",),
                            classes=vocabulary, protocol="ptbxl", mode="linear", label_fractions=(0.3, 1.0),
                            seeds=2, baselines=("random",), ecg_weights=str(tmp_path / "pre"), batch_size=16,
                            bootstrap=50)  # fmt: skip
    results = finetune(config)
    assert read_labels(out).classes == vocabulary and results["targets"] == list(vocabulary)
    fold = json.loads((out / "folds" / "ptbxl.json").read_text())
    test_rows = manifest[fold["rows"]]
    assert set(test_rows["fold"]) == {10}
    assert set(manifest[fold["val_rows"]]["fold"]) == {9}
    assert len(fold["prob"][0]) == len(vocabulary) and np.isnan(fold["metrics"]["ABSENT"]["roc_auc"])
    # rows with an empty superclass are left out, every other test-fold row is scored once
    expected = manifest.with_row_index("r").filter((pl.col("fold") == 10) & (pl.col("ptbxl_superclass").list.len() > 0))
    assert sorted(fold["rows"]) == expected["r"].to_list()
    assert not set(test_rows["subject_id"]) & set(manifest[fold["val_rows"]]["subject_id"])
    table = {(e["encoder"], e["fraction"]): e for e in results["evaluation"]}
    assert set(table) == {("pretrained", 1.0), ("pretrained", 0.3), ("random", 1.0), ("random", 0.3)}
    for entry in table.values():
        assert len(entry["pooled"]["roc_auc"]["values"]) == 2 and len(entry["ci"]["roc_auc"]) == 2
    assert table[("random", 0.3)]["train_rows"] < table[("random", 1.0)]["train_rows"]
    assert (out / "label_efficiency.png").stat().st_size > 1000
    assert (out / "cells" / "random-linear-f0.3-s1" / "results.json").exists()
    # a resumed run with another vocabulary is refused
    with pytest.raises(ValueError, match="another label vocabulary"):
        finetune(FinetuneConfig(str(ptbxl_store), str(out), modalities=("ecg",), targets=("ptbxl_superclass",),
                                protocol="ptbxl", mode="linear", resume=True, ecg_weights=str(tmp_path / "pre")))  # fmt: skip


def test_finetune_command_on_ptbxl(ptbxl_store, tmp_path):
    env = {**os.environ, "COLUMNS": "250"}
    result = subprocess.run(
        [sys.executable, "-m", "physiofm", "finetune", str(ptbxl_store), "--out", str(tmp_path / "run"),
         "--modalities", "ecg", "--targets", "ptbxl_rhythm", "--protocol", "ptbxl", "--mode", "frozen-mlp",
         "--ecg-layers", "1", "--max-steps", "5", "--batch-size", "16", "--bootstrap", "20", "--device", "cpu"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mean AUC" in result.stdout and "pooled AUC" in result.stdout
    labels = json.loads((tmp_path / "run" / "labels.json").read_text())
    assert labels["kind"] == "multilabel" and "SR" in labels["classes"]
    bad = subprocess.run(
        [sys.executable, "-m", "physiofm", "finetune", str(ptbxl_store), "--out", str(tmp_path / "bad"),
         "--targets", "nothing", "--modalities", "ecg", "--ecg-layers", "1"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert bad.returncode == 1 and "no column" in bad.stderr and "Traceback" not in bad.stderr


def test_two_process_linear_probe_matches_one_process(ptbxl_store, tmp_path):
    """Under torchrun each rank embeds its share, rank 0 fits the head: the same predictions as one process."""
    from physiofm.train.distributed import LAUNCH_ENV

    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    args = ["finetune", str(ptbxl_store), "--modalities", "ecg", "--targets", "ptbxl_superclass", "--protocol",
            "ptbxl", "--mode", "linear", "--ecg-layers", "1", "--batch-size", "8", "--bootstrap", "0", "--device",
            "cpu", "--baselines", "none"]  # fmt: skip
    one = subprocess.run([sys.executable, "-m", "physiofm", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "physiofm",
         *args, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("mean AUC") == 1
    a, b = (json.loads((tmp_path / run / "folds" / "ptbxl.json").read_text()) for run in ("one", "two"))
    assert a["rows"] == b["rows"]
    assert np.allclose(a["prob"], b["prob"], atol=1e-4)
    assert json.loads((tmp_path / "two" / "results.json").read_text())["world_size"] == 2


def test_early_stopping_keeps_the_best_validation_checkpoint(ptbxl_store, tmp_path):
    config = FinetuneConfig(str(ptbxl_store), str(tmp_path / "run"), modalities=("ecg",), targets=("ptbxl_superclass",),
                            protocol="ptbxl", max_steps=8, eval_every=1, patience=2, batch_size=16, lr=1e-3,
                            ecg_model={"n_layer": 1}, baselines=(), bootstrap=0)  # fmt: skip
    finetune(config)
    fold = json.loads((tmp_path / "run" / "folds" / "ptbxl.json").read_text())
    history = fold["selection"]["history"]
    best = max(history, key=lambda h: h["score"])
    assert fold["selection"]["step"] == best["step"] and fold["steps"] == history[-1]["step"]
    if fold["steps"] < 8:  # stopped early: the last two passes did not beat the best
        assert all(h["score"] <= best["score"] for h in history[-2:]) and history[-3]["step"] <= best["step"]
    assert len(fold["thresholds"]) == 5 and all(-1e-6 <= t <= 1 for t in fold["thresholds"])
