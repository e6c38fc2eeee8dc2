"""Channel names: which are ECG leads (and which lead), which are other signals to skip."""

from __future__ import annotations

import pytest

from physiofm.corpora.channels import STANDARD_LEADS, classify
from physiofm.preprocess.leads import lead_mapping, unmapped


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("II", ("ecg", "II")),
        ("MLII", ("ecg", "II")),
        ("DIII", ("ecg", "III")),
        ("ECG aVF", ("ecg", "aVF")),
        ("avl", ("ecg", "aVL")),
        ("Lead V6", ("ecg", "V6")),
        ("V", ("ecg", None)),
        ("MCL1", ("ecg", None)),
        ("PLETH", ("ppg", None)),
        ("SpO2", ("spo2", None)),
        ("ABP", ("pressure", None)),
        ("ART", ("pressure", None)),
        ("RESP", ("resp", None)),
        ("vx", ("frank", None)),
        ("vz", ("frank", None)),
        ("GSR1", ("eda", None)),
        ("Status", ("status", None)),
        ("EDF Annotations", ("annotation", None)),
        ("Temp", ("temperature", None)),
        ("Fpz-Cz", ("other", None)),
    ],
)
def test_classify(name, expected):
    assert classify(name) == expected


def test_every_standard_lead_classifies_as_itself():
    assert [classify(lead) for lead in STANDARD_LEADS] == [("ecg", lead) for lead in STANDARD_LEADS]


def test_unmapped_ecg_channels_are_listed_with_why():
    channels = ["II", "V", "MLII", "V5"]
    src, dst = lead_mapping(channels)
    assert src.tolist() == [0, 3] and dst.tolist() == [1, 10]
    assert unmapped(channels) == ["V (ecg: not a standard lead)", "MLII (ecg: a second II)"]
