"""Corpora: one reader module per archive or dataset, the record types, and the one registry.

>>> from physiofm import corpora
>>> corpora.names("ecg")
('code15', 'mimic-iv-ecg', 'ptbxl', 'challenge', 'wfdb')
>>> corpora.get("ptbxl").kind
'ecg'
"""

from physiofm.corpora.base import Item, Reader, Record, Reject, Signal
from physiofm.corpora.registry import CORPORA, KINDS, Corpus, detect, get, names

__all__ = ["CORPORA", "KINDS", "Corpus", "Item", "Reader", "Record", "Reject", "Signal", "detect", "get", "names"]
