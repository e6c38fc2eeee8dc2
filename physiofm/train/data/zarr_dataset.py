"""Random access to a store's Zarr rows, as a map-style dataset with the fields of a streamed batch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from physiofm.io import StorageOptions
from physiofm.store.layout import Layout
from physiofm.train.data.index import Filters, StoreIndex


class ZarrDataset(Dataset):
    """Random access to the selected samples of a store's Zarr arrays (map-style).

    Item ``i`` is the ``i``-th selected sample, a dict with the fields of a streamed batch for
    one sample (tensors without the batch axis, ``key`` a str, ``row``/``n_patches`` ints,
    ``pad`` False); ``torch``'s default collate makes batches of the streaming format.  The
    Zarr group is opened lazily in each process that reads (so DataLoader workers never use a
    connection made before the fork); ``__getitems__`` reads a batch of rows at once.
    """

    def __init__(
        self,
        store: str,
        *,
        modalities: Sequence[str] | None = None,
        labels: Sequence[str] = (),
        filters: Filters = None,
        rows: Sequence[int] | np.ndarray | None = None,
        storage_options: StorageOptions | None = None,
    ) -> None:
        self.index = StoreIndex.load(
            store, modalities=modalities, labels=labels, filters=filters, rows=rows, storage_options=storage_options
        )
        self._arrays: dict[str, Any] | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None, "_pid": -1}

    def _open(self) -> dict[str, Any]:
        if self._arrays is None or self._pid != os.getpid():
            group = Layout(self.index.url, self.index.storage_options).open_zarr("r")
            self._arrays, self._pid = {m: group[m] for m in self.index.modalities}, os.getpid()
        return self._arrays

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        js = np.asarray(indices, dtype=np.int64)
        if len(js) and (js.min() < -len(self) or js.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} samples")
        js %= len(self)
        rows, inverse = np.unique(self.index.rows[js], return_inverse=True)
        arrays = {}
        for modality, array in self._open().items():
            values = np.asarray(array.oindex[rows], dtype=np.float32)[inverse]
            arrays[modality] = values * self.index.scales[modality][js].reshape(-1, *[1] * (values.ndim - 1))
        fields = self.index.fields(js)
        samples = []
        for i in range(len(js)):
            sample = {m: torch.from_numpy(arrays[m][i]) for m in arrays}
            for name, value in fields.items():
                item = value[i]
                sample[name] = item.item() if name in ("row", "n_patches", "pad") else item
            samples.append(sample)
        return samples
