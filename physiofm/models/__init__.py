"""Models: the CBraMod encoder (EEG, and the symmetric ECG encoder) in named sizes, dual masking, the fusion head."""

from physiofm.models.cbramod import CBraMod
from physiofm.models.checkpoint import CheckpointError, load_pretrained, save_encoder
from physiofm.models.fusion import BranchNorm, FusionClassifier, pool_features
from physiofm.models.masking import DualMasking, masked_mse, masked_squared_error
from physiofm.models.sizes import MODEL_SIZES, create_model

__all__ = [
    "MODEL_SIZES",
    "BranchNorm",
    "CBraMod",
    "CheckpointError",
    "DualMasking",
    "FusionClassifier",
    "create_model",
    "load_pretrained",
    "masked_mse",
    "masked_squared_error",
    "pool_features",
    "save_encoder",
]
