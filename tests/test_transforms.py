import numpy as np
import pytest

from physiofm.preprocess import transforms as T
from physiofm.preprocess.leads import STANDARD_LEADS, lead_mapping, standard_index
from physiofm.units import unit_scale


@pytest.mark.parametrize("fs_in", [100, 128, 256, 257, 360, 400, 500, 1000])
def test_resample_keeps_a_sine_frequency_and_length(fs_in):
    seconds = 10
    t = np.arange(seconds * fs_in) / fs_in
    x = np.stack([np.sin(2 * np.pi * 7 * t), np.cos(2 * np.pi * 3 * t)])
    y = T.resample(x, fs_in, 200)
    assert y.shape == (2, seconds * 200) == (2, T.resampled_length(seconds * fs_in, fs_in, 200))
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert np.argmax(spectrum) * 200 / y.shape[1] == pytest.approx(7, abs=0.1)
    t200 = np.arange(y.shape[1]) / 200
    middle = slice(200, -200)  # away from the filter's edge transients
    assert np.allclose(y[0, middle], np.sin(2 * np.pi * 7 * t200)[middle], atol=0.02)


def test_bandpass_passes_the_band_and_stops_drift_and_mains():
    fs = 200
    t = np.arange(20 * fs) / fs
    inband = np.sin(2 * np.pi * 10 * t)
    drift = 2 * np.sin(2 * np.pi * 0.05 * t)
    mains = np.sin(2 * np.pi * 60 * t)
    y = T.bandpass(np.stack([inband + drift + mains] * 3), fs, 0.5, 45.0)
    middle = slice(400, -400)
    assert np.allclose(y[:, middle], inband[middle], atol=0.1)  # 60 Hz is down to ~5 %, drift to <0.2 %


def test_notch_removes_its_frequency():
    fs = 200
    t = np.arange(10 * fs) / fs
    y = T.notch(np.sin(2 * np.pi * 50 * t) + np.sin(2 * np.pi * 10 * t), fs, 50.0)
    assert np.abs(y[300:-300] - np.sin(2 * np.pi * 10 * t)[300:-300]).max() < 0.05


def test_windows_are_patches_in_time_order_and_pad_the_last():
    x = np.arange(2 * 2500, dtype=np.float32).reshape(1, 2, 2500)  # (R, C, T)
    assert T.n_windows(2500, 1000, None) == 2
    assert T.n_windows(2500, 1000, 400) == 3 and T.n_windows(2500, 1000, 600) == 2
    w = T.to_windows(x, 1000, 200, 3)
    assert w.shape == (1, 3, 2, 5, 200)
    assert np.array_equal(w[0, 1, 1].ravel(), x[0, 1, 1000:2000])
    assert np.array_equal(w[0, 2, 0].ravel()[:500], x[0, 0, 2000:]) and not w[0, 2, 0].ravel()[500:].any()


def test_window_fraction_maps_source_samples_to_windows_by_time():
    fs = 500
    mask = np.zeros((1, 30 * fs), dtype=bool)
    mask[0, 12 * fs : 12 * fs + 50] = True  # 0.1 s inside the second 10-s window
    share = T.window_fraction(mask, fs, 10, 3)
    assert share[0, 1] == pytest.approx(50 / 5000) and share[0, 0] == share[0, 2] == 0
    assert T.window_any(mask, fs, 10, 3).tolist() == [[False, True, False]]


def test_unit_scale():
    assert unit_scale("uV") == 1e-3 and unit_scale("mv") == 1 and unit_scale("V") == 1e3
    assert unit_scale("mV", "uV") == 1e3
    with pytest.raises(ValueError, match="unknown physical unit"):
        unit_scale("furlong")


def test_lead_names_map_case_insensitively_with_aliases():
    assert [standard_index(n) for n in ("AVR", "aVR", "DI", "I", "MLII", "v6", "Lead III")] == [3, 3, 0, 0, 1, 11, 2]
    assert standard_index("Status") is None
    src, dst = lead_mapping(["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"])
    assert [STANDARD_LEADS[d] for d in dst][4:6] == ["aVF", "aVL"] and list(src[4:6]) == [4, 5]
    src, dst = lead_mapping(["MLII", "V5", "junk", "II"])
    assert list(src) == [0, 1] and list(dst) == [1, 10]


def test_resampling_a_large_dc_level_does_not_ring_at_the_edges():
    """Emotiv EEG sits near 4,200 µV: zero-padding would turn that into a step at both edges."""
    fs = 128
    t = np.arange(20 * fs) / fs
    x = 4200 + 10 * np.sin(2 * np.pi * 10 * t)
    y = T.bandpass(T.resample(x, fs, 200), 200, 0.3, 45.0)
    assert np.abs(y).max() < 15  # the 10 µV alpha and an ordinary filter edge; zero-padding gave ~4,000
