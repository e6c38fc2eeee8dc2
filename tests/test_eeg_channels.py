"""The EEG channel contract: names across archives, 10-10 aliases, masks for missing channels."""

from __future__ import annotations

import pytest

from physiofm.corpora import eeg_channels as C


@pytest.mark.parametrize(
    ("name", "electrode", "reference"),
    [
        ("EEG FP1-REF", "FP1", "REF"),  # TUH 01_tcp_ar
        ("EEG FP1-LE", "FP1", "LE"),  # TUH 02_tcp_le
        ("Fp1", "FP1", None),  # BIDS, BioSemi
        ("Fp1.", "FP1", None),  # EEGMMIDB pads with dots
        ("Cz..", "CZ", None),
        ("EEG C3-A2", "C3", "A2"),  # sleep EDFs: referred to the opposite mastoid/ear
        ("POL O2", "O2", None),  # Nihon Kohden exports
        ("FP1-F7", "FP1-F7", None),  # a bipolar derivation stays whole
        ("EEG T3-REF", "T3", "REF"),
    ],
)
def test_names_normalise_to_electrode_and_reference(name, electrode, reference):
    assert C.normalise(name) == (electrode, reference)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("EEG FP1-REF", "eeg"),
        ("AFF1h", "eeg"),
        ("EEG A1-REF", "eeg"),
        ("EEG EKG1-REF", "ecg"),
        ("EEG ROC-REF", "eog"),
        ("PHOTIC-REF", "photic"),
        ("IBI", "derived"),
        ("BURSTS", "derived"),
        ("Status", "status"),
        ("EDF Annotations", "annotation"),
        ("EMG", "emg"),
        ("E23", "other"),
    ],
)
def test_channels_are_classified_by_name(name, kind):
    assert C.kind(name) == kind


def test_cbramod_channels_come_in_cbramod_order_from_any_naming():
    tuh = [f"EEG {name}-REF" for name in reversed(C.CBRAMOD_19)] + ["EEG A1-REF", "EEG EKG1-REF"]
    found = C.match(tuple(tuh))
    assert [tuh[i] for i in found.source] == [f"EEG {name}-REF" for name in C.CBRAMOD_19]
    assert found.missing == () and all(found.present) and found.reference == "REF"
    assert "EEG A1-REF (eeg: not in the channel set)" in found.unused


def test_ten_ten_names_stand_for_the_ten_twenty_sites():
    bids = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T7", "T8", "P7", "P8",
            "Fz", "Cz", "Pz")  # fmt: skip
    found = C.match(bids)
    assert found.missing == ()
    assert [bids[i] for i in found.source[12:16]] == ["T7", "T8", "P7", "P8"]
    assert set(found.aliased) == {"T7 as T3", "T8 as T4", "P7 as T5", "P8 as T6"}
    # and the other way: a 10-10 target set matched by 10-20 names
    assert C.match(("T3", "T4"), ("T7", "T8")).source == (0, 1)


def test_an_exact_name_wins_over_its_alias():
    assert C.match(("T7", "T3"), ("T3",)).source == (1,)


def test_missing_channels_are_named_and_masked():
    found = C.match(("Fp1", "Fp2", "Cz", "FP1-F7"))
    assert found.present[:2] == (True, True) and found.present[17] is True
    assert "FP1-F7 (eeg: not in the channel set)" in found.unused  # a derivation is not FP1
    assert len(found.missing) == 16 and found.missing[:3] == ("F3", "F4", "C3")


def test_duplicates_keep_the_first_and_say_so():
    found = C.match(("EEG FP1-REF", "EEG FP1-LE"), ("FP1",))
    assert found.source == (0,)
    assert found.unused == ("EEG FP1-LE (eeg: duplicate of another channel)",)
    assert found.reference == "REF"
