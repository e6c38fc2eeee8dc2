"""Models: the CBraMod encoder (EEG, and the symmetric ECG encoder), dual masking, the fusion head."""

from physiofm.models.cbramod import CBraMod
from physiofm.models.checkpoint import CheckpointError, load_pretrained
from physiofm.models.fusion import FusionClassifier
from physiofm.models.masking import DualMasking, masked_mse, masked_squared_error

__all__ = ["CBraMod", "CheckpointError", "DualMasking", "FusionClassifier", "load_pretrained", "masked_mse", "masked_squared_error"]
