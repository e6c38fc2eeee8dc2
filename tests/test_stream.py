"""Streaming and random-access datasets: exact epochs over ranks × workers, shuffling, resuming, filters,
unit scaling, S3 (equal to local, through connection drops, with a clear error when drops persist), Zarr."""

from __future__ import annotations

import gc
import re
import select
import shutil
import socket
import threading
import time
from itertools import islice
from typing import Self
from urllib.parse import urlparse

import numpy as np
import polars as pl
import pytest
import torch
import zarr
from storecheck import assert_same_batches
from torch.utils.data import DataLoader

from physiofm.store.build import build
from physiofm.synth.ecg import synth_challenge
from physiofm.synth.emotion import synth_dreamer
from physiofm.train.data import stream as stream_module
from physiofm.train.data.s3 import ShardReadError, gopen_fsspec
from physiofm.train.data.stream import StreamError, StreamingDataset
from physiofm.train.data.zarr_dataset import ZarrDataset


@pytest.fixture(scope="module")
def ecg_raw(tmp_path_factory):
    return synth_challenge(
        tmp_path_factory.mktemp("raw") / "challenge", n_records=45, seed=3, subsets=("georgia", "cpsc_2018")
    )


@pytest.fixture(scope="module")
def ecg_store(ecg_raw, tmp_path_factory):
    """45 ECG samples in 7 shards of unequal sizes (two subsets, ages as a label)."""
    out = tmp_path_factory.mktemp("store") / "ecg"
    build(str(ecg_raw), str(out), jobs=1, shard_size=7)
    return out


@pytest.fixture(scope="module")
def emotion_store(tmp_path_factory):
    raw = synth_dreamer(tmp_path_factory.mktemp("raw") / "dreamer", subjects=2, seed=5, clip_seconds=(20.0, 24.0))
    out = tmp_path_factory.mktemp("store") / "emotion"
    build(str(raw), str(out), kind="emotion", jobs=1, shard_size=16)
    return out


@pytest.fixture()
def s3_store(ecg_store, s3_bucket):
    """The ECG store uploaded to the loopback S3 server: ``(url, storage_options)``."""
    import s3fs

    url, options = s3_bucket
    s3fs.S3FileSystem(**options).put(str(ecg_store), f"{url}/ecg", recursive=True)
    return f"{url}/ecg", options


def manifest_of(store) -> pl.DataFrame:
    return pl.read_parquet(store / "manifest.parquet")


def run_epoch(dataset: StreamingDataset) -> list[dict]:
    return list(dataset.loader())


def real_keys(batches: list[dict]) -> list[str]:
    return [key for batch in batches for key, pad in zip(batch["key"], batch["pad"].tolist()) if not pad]


# ---- a TCP proxy that drops connections ---------------------------------------------------------


class DroppingProxy:
    """Forwards 127.0.0.1:<port> to ``upstream``; a connection that has sent ``cut_after`` bytes to the
    client is cut there, ``cuts`` times (None: always), after leaving the first ``spare`` such connections
    alone.  Records the start of every ranged request.  Its threads end when it is closed, or after
    ``lifetime_s`` whatever happens."""

    def __init__(
        self, upstream: str, cut_after: int, cuts: int | None, spare: int = 0, lifetime_s: float = 60.0
    ) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.cut_after, self.cuts, self.spare = cut_after, cuts, spare
        self.cuts_done = 0
        self.range_starts: list[int] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._deadline = time.monotonic() + lifetime_s
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _running(self) -> bool:
        return not self._stopped.is_set() and time.monotonic() < self._deadline

    def _readable(self, sock: socket.socket) -> bool:
        try:
            return bool(select.select([sock], [], [], 0.2)[0])
        except (OSError, ValueError):
            raise ConnectionError from None

    def _accept(self) -> None:
        with self._listener:
            while self._running():
                if self._readable(self._listener):
                    client, _ = self._listener.accept()
                    threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        with self._lock:
            self._sockets += [client, upstream]
        done = threading.Event()
        threading.Thread(target=self._requests, args=(client, upstream, done), daemon=True).start()
        sent, decided = 0, False
        try:
            while self._running() and not done.is_set():
                if not self._readable(upstream):
                    continue
                data = upstream.recv(1 << 16)
                if not data:
                    break
                if not decided and sent + len(data) > self.cut_after:
                    decided = True
                    if self._take_cut():
                        client.sendall(data[: self.cut_after - sent])
                        break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            done.set()
            for sock in (client, upstream):
                sock.close()

    def _requests(self, client: socket.socket, upstream: socket.socket, done: threading.Event) -> None:
        try:
            while self._running() and not done.is_set():
                if not self._readable(client):
                    continue
                data = client.recv(1 << 16)
                if not data:
                    break
                with self._lock:
                    self.range_starts += [int(x) for x in re.findall(rb"(?i)range: bytes=(\d+)-", data)]
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            done.set()

    def _take_cut(self) -> bool:
        with self._lock:
            if self.spare:
                self.spare -= 1
                return False
            if self.cuts is not None and self.cuts_done >= self.cuts:
                return False
            self.cuts_done += 1
            return True


# ---- exact epochs ---------------------------------------------------------------------------------


def test_exact_epoch_over_two_ranks_and_two_workers(ecg_store):
    manifest = manifest_of(ecg_store)
    per_rank = []
    for rank in range(2):
        dataset = StreamingDataset(
            str(ecg_store), batch_size=4, num_workers=2, rank=rank, world_size=2, labels=["age"], seed=7
        )
        batches = run_epoch(dataset)
        assert len(batches) == len(dataset) == dataset.batches_per_epoch
        per_rank.append(batches)
    assert len(per_rank[0]) == len(per_rank[1])
    assert [b["ecg"].shape[0] for b in per_rank[0]] == [b["ecg"].shape[0] for b in per_rank[1]]
    keys = real_keys(per_rank[0]) + real_keys(per_rank[1])
    assert len(keys) == len(set(keys)) == manifest.height and set(keys) == set(manifest["key"])
    batch = per_rank[0][0]
    assert batch["ecg"].dtype == torch.float32 and batch["ecg"].shape[1:] == (12, 10, 200)
    assert batch["lead_mask"].dtype == torch.bool and batch["lead_mask"].shape == (4, 12)
    assert batch["labels"].shape == (4, 1) and batch["row"].dtype == torch.int64
    by_key = dict(zip(manifest["key"], manifest["age"]))
    for b in per_rank[0] + per_rank[1]:
        for i, (key, pad) in enumerate(zip(b["key"], b["pad"].tolist())):
            if pad:  # 45 samples over 4 slots: padded to 12 per slot
                assert key == "" and b["row"][i] == -1 and not b["ecg"][i].any() and b["labels"][i].isnan().all()
            else:
                assert b["labels"][i, 0] == by_key[key] and manifest["key"][int(b["row"][i])] == key
    assert sum(int(b["pad"].sum()) for r in per_rank for b in r) == 4 * 12 - 45


def test_fewer_shards_than_workers_is_still_exact(ecg_store):
    manifest = manifest_of(ecg_store).with_row_index("row")
    one_shard = manifest.filter(pl.col("shard") == "shard-000000.tar")
    batches = [
        run_epoch(
            StreamingDataset(
                str(ecg_store), batch_size=2, num_workers=2, rank=rank, world_size=2, rows=one_shard["row"].to_numpy()
            )
        )
        for rank in range(2)
    ]
    assert len(batches[0]) == len(batches[1]) == 2  # 4 slots share one shard of 7: 2, 2, 2, 1 + padding
    keys = real_keys(batches[0]) + real_keys(batches[1])
    assert sorted(keys) == sorted(one_shard["key"]) and len(keys) == len(set(keys))


def test_shuffle_is_deterministic_per_seed_and_epoch(ecg_store):
    def order(**kw) -> list[str]:
        return real_keys(run_epoch(StreamingDataset(str(ecg_store), batch_size=5, num_workers=2, **kw)))

    first = order(seed=1, epoch=0)
    assert first == order(seed=1, epoch=0)
    assert first != order(seed=1, epoch=1) and sorted(first) == sorted(order(seed=1, epoch=1))
    assert first != order(seed=2, epoch=0)
    dataset = StreamingDataset(str(ecg_store), batch_size=5, num_workers=0, shuffle=False)
    assert real_keys(run_epoch(dataset)) == manifest_of(ecg_store)["key"].to_list()


def test_resume_yields_exactly_the_rest_of_the_epoch(ecg_store):
    def dataset(rank: int) -> StreamingDataset:
        return StreamingDataset(
            str(ecg_store), batch_size=3, num_workers=2, rank=rank, world_size=2, seed=4, epoch=3, shuffle_buffer=5
        )

    for rank in range(2):
        full = run_epoch(dataset(rank))
        for consumed in (1, 4, len(full) - 1, len(full)):
            resumed = dataset(rank)
            resumed.load_state_dict(dataset(rank).state_dict(consumed))
            assert len(resumed) == len(full) - consumed
            assert_same_batches(run_epoch(resumed), full[consumed:])
    changed = StreamingDataset(str(ecg_store), batch_size=4, num_workers=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        changed.load_state_dict(dataset(0).state_dict(2))


def test_filters_select_and_skip_without_decoding(ecg_store, monkeypatch):
    manifest = manifest_of(ecg_store).with_row_index("row")
    decoded = []
    original = stream_module._read_npy
    monkeypatch.setattr(stream_module, "_read_npy", lambda *args: decoded.append(args[-1]) or original(*args))
    chosen = manifest.filter((pl.col("subset") == "georgia") & ~pl.col("q_nan"))
    for filters in ({"subset": "georgia", "q_nan": False}, (pl.col("subset") == "georgia") & ~pl.col("q_nan")):
        decoded.clear()
        keys = real_keys(run_epoch(StreamingDataset(str(ecg_store), batch_size=4, filters=filters)))
        assert sorted(keys) == sorted(chosen["key"]) and len(decoded) == chosen.height < manifest.height
    rows = manifest["row"].to_numpy()[::3]
    dataset = StreamingDataset(str(ecg_store), batch_size=4, rows=rows, filters={"subset": ["georgia"]})
    expected = manifest.filter(pl.col("row").is_in(rows.tolist()) & (pl.col("subset") == "georgia"))["key"]
    assert sorted(real_keys(run_epoch(dataset))) == sorted(expected)
    with pytest.raises(ValueError, match="no sample"):
        StreamingDataset(str(ecg_store), batch_size=4, filters={"subset": "nowhere"})
    with pytest.raises(ValueError, match="manifest lacks"):
        StreamingDataset(str(ecg_store), batch_size=4, filters={"no_such_column": 1})
    with pytest.raises(ValueError, match="numeric or boolean"):
        StreamingDataset(str(ecg_store), batch_size=4, labels=["dx"])


def test_scaling_from_units_eeg_divided_by_100_ecg_unchanged(emotion_store):
    group = zarr.open_group(str(emotion_store / "zarr"), mode="r")
    eeg, ecg = group["eeg"][:], group["ecg"][:]
    manifest = manifest_of(emotion_store)
    assert set(manifest["eeg_unit"]) == {"uV"} and set(manifest["ecg_unit"]) == {"mV"}
    labels = ["valence", "arousal_high"]
    batches = run_epoch(StreamingDataset(str(emotion_store), batch_size=8, num_workers=2, labels=labels, meta=True))
    assert sum(int((~b["pad"]).sum()) for b in batches) == manifest.height
    for batch in batches:
        real = ~batch["pad"]
        assert [m.get("key", "") for m in batch["meta"]] == batch["key"]
        rows = batch["row"][real].numpy()
        np.testing.assert_allclose(batch["eeg"][real].numpy(), eeg[rows] / 100, rtol=1e-6)
        np.testing.assert_array_equal(batch["ecg"][real].numpy(), ecg[rows])
        expected = manifest[rows].select(pl.col(labels).cast(pl.Float32)).to_numpy()
        np.testing.assert_array_equal(batch["labels"][real].numpy(), expected)
    single = ZarrDataset(str(emotion_store), labels=labels)[5]
    np.testing.assert_allclose(single["eeg"].numpy(), eeg[single["row"]] / 100, rtol=1e-6)
    assert single["ecg"].shape == (2, 10, 200) and single["pad"] is False


def test_float16_store_streams_as_float32(ecg_raw, tmp_path):
    out = tmp_path / "f16"
    build(str(ecg_raw), str(out), jobs=1, shard_size=20, dtype="float16")
    data = zarr.open_group(str(out / "zarr"), mode="r")["ecg"][:]
    assert data.dtype == np.float16
    for batch in run_epoch(StreamingDataset(str(out), batch_size=8, num_workers=2)):
        assert batch["ecg"].dtype == torch.float32
        real = ~batch["pad"]
        np.testing.assert_array_equal(batch["ecg"][real].numpy(), data[batch["row"][real].numpy()].astype(np.float32))


def test_zarr_dataset_with_two_workers(ecg_store):
    data = zarr.open_group(str(ecg_store / "zarr"), mode="r")["ecg"][:]
    dataset = ZarrDataset(str(ecg_store), labels=["age"], filters={"q_flat": False})
    loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=True, generator=torch.Generator().manual_seed(0))
    rows = []
    for batch in loader:
        np.testing.assert_array_equal(batch["ecg"].numpy(), data[batch["row"].numpy()])
        assert batch["lead_mask"].shape[1] == 12 and not batch["pad"].any() and isinstance(batch["key"][0], str)
        rows += batch["row"].tolist()
    assert sorted(rows) == dataset.index.rows.tolist() and len(rows) == len(dataset)
    streamed = run_epoch(
        StreamingDataset(str(ecg_store), batch_size=4, shuffle=False, labels=["age"], filters={"q_flat": False})
    )
    first = DataLoader(dataset, batch_size=4)
    assert_same_batches(list(first), streamed)


def test_resampled_stream_is_endless_seeded_and_resumable(ecg_store):
    def take(n: int, **kw) -> list[dict]:
        dataset = StreamingDataset(
            str(ecg_store), batch_size=4, resampled=True, num_workers=2, seed=9, filters={"subset": "georgia"}, **kw
        )
        with pytest.raises(TypeError):
            len(dataset)
        return list(islice(dataset.loader(), n))

    batches = take(30)
    keys = real_keys(batches)
    georgia = set(manifest_of(ecg_store).filter(pl.col("subset") == "georgia")["key"])
    assert len(keys) == 120 > len(georgia) and set(keys) <= georgia and len(set(keys)) < len(keys)
    assert_same_batches(take(30), batches)
    assert_same_batches(take(10, start_batch=20), batches[20:])


def test_mismatched_workers_and_broken_shards_fail_clearly(ecg_store, tmp_path):
    dataset = StreamingDataset(str(ecg_store), batch_size=4, num_workers=2)
    with pytest.raises(ValueError, match="num_workers=2"):
        list(dataset)
    broken = tmp_path / "broken"
    shutil.copytree(ecg_store, broken)
    shard = broken / "wds" / "shard-000002.tar"
    shard.write_bytes(shard.read_bytes()[:200_000])
    with pytest.raises(StreamError, match="shard-000002.tar"):
        run_epoch(StreamingDataset(str(broken), batch_size=4))


# ---- S3 ------------------------------------------------------------------------------------------


def test_s3_streaming_equals_local(ecg_store, s3_store):
    url, options = s3_store
    kw = {"batch_size": 4, "num_workers": 2, "rank": 1, "world_size": 2, "labels": ["age"], "seed": 5}
    local = run_epoch(StreamingDataset(str(ecg_store), **kw))
    assert_same_batches(run_epoch(StreamingDataset(url, storage_options=options, **kw)), local)
    remote = ZarrDataset(url, storage_options=options, labels=["age"])
    loader = DataLoader(remote, batch_size=8, num_workers=2)
    assert_same_batches(list(loader), list(DataLoader(ZarrDataset(str(ecg_store), labels=["age"]), batch_size=8)))


def test_s3_reads_resume_after_dropped_connections(ecg_store, s3_store, s3_server):
    url, options = s3_store
    shard = f"{url}/wds/shard-000001.tar"
    expected = (ecg_store / "wds" / "shard-000001.tar").read_bytes()
    with DroppingProxy(s3_server, cut_after=60_000, cuts=2, spare=3) as proxy:  # the 4th block fails twice
        reader = gopen_fsspec(
            shard, storage_options={**options, "endpoint_url": proxy.url}, size=len(expected), block_size=100_000
        )
        assert reader.read(250_000) + reader.read() == expected
    assert proxy.cuts_done == 2
    blocks = list(range(0, len(expected), 100_000))
    assert proxy.range_starts == blocks[:4] + [300_000] * 2 + blocks[4:]  # retried from the first byte not delivered

    kw = {"batch_size": 4, "num_workers": 2, "labels": ["age"], "seed": 5}
    local = run_epoch(StreamingDataset(str(ecg_store), **kw))
    with DroppingProxy(s3_server, cut_after=50_000, cuts=3) as proxy:
        remote = StreamingDataset(url, storage_options={**options, "endpoint_url": proxy.url}, **kw)
        assert_same_batches(run_epoch(remote), local)
    assert proxy.cuts_done == 3


def test_s3_persistent_drops_end_with_an_error_naming_the_shard(s3_store, s3_server):
    url, options = s3_store
    with DroppingProxy(s3_server, cut_after=50_000, cuts=None) as proxy:
        dataset = StreamingDataset(url, storage_options={**options, "endpoint_url": proxy.url}, batch_size=4, retries=2)
        with pytest.raises(ShardReadError, match=r"wds/shard-\d{6}\.tar: read of bytes 0-\d+ .* 3 attempts"):
            run_epoch(dataset)
    assert proxy.cuts_done == 3


# ---- the batched loader: shared-memory slots, persistent workers -------------------------------------


def per_sample_epoch(dataset: StreamingDataset) -> list[dict]:
    """The same epoch through a plain DataLoader: a fresh batch per yield, every field pickled by torch."""
    return list(DataLoader(dataset, batch_size=None, num_workers=dataset.num_workers))


def test_batched_loader_yields_exactly_the_per_sample_path(ecg_store):
    kw = {"batch_size": 3, "rank": 1, "world_size": 2, "labels": ["age"], "seed": 5, "meta": True}
    for workers in (0, 2):
        dataset = StreamingDataset(str(ecg_store), num_workers=workers, shuffle_buffer=7, **kw)
        batched, plain = run_epoch(dataset), per_sample_epoch(dataset)
        assert_same_batches(batched, plain)
        assert [b["meta"] for b in batched] == [b["meta"] for b in plain]
        assert all(b["ecg"].dtype == torch.float32 and b["ecg"].is_contiguous() for b in batched)


@pytest.mark.parametrize("how", ["collected", "closed", "options changed"])
def test_loader_workers_exit_by_themselves_when_the_loader_goes(ecg_store, how):
    """Dataset and loader form a reference cycle; when the collector takes them (or on close(), or when new
    options replace the loader) the workers get their stop signal and exit cleanly (exit code 0), instead of
    hanging until the DataLoader's join timeout kills them (SIGTERM)."""
    import gc

    dataset = StreamingDataset(str(ecg_store), batch_size=4, num_workers=2, seed=1)
    loader = dataset.loader()
    next(iter(loader))  # a partial epoch: the workers are busy, then idle and persistent
    workers = list(loader.dataloader._iterator._workers)
    if how == "closed":
        loader.close()
    elif how == "options changed":
        assert dataset.loader(timeout=60) is not loader
    else:
        del dataset, loader
        gc.collect()
    for worker in workers:
        worker.join(timeout=30)
    assert [w.exitcode for w in workers] == [0, 0]


def test_persistent_workers_follow_set_epoch_and_resume(ecg_store):
    def fresh(epoch: int) -> StreamingDataset:
        return StreamingDataset(str(ecg_store), batch_size=3, num_workers=2, seed=4, shuffle_buffer=6, epoch=epoch)

    dataset = fresh(0)
    loader = dataset.loader(prefetch_factor=1)  # slots: 2 per window + 1 prefetched + 2 = 5 per worker
    first = list(loader)  # all 8 batches of each worker held: one-off buffers after the 5 slots
    assert dataset.loader(prefetch_factor=1) is loader
    assert_same_batches(first, per_sample_epoch(fresh(0)))
    pids = [w.pid for w in loader.dataloader._iterator._workers]
    for epoch in (1, 2):
        dataset.set_epoch(epoch)
        assert_same_batches(list(loader), per_sample_epoch(fresh(epoch)))
    state = dataset.state_dict(5)
    dataset.set_epoch(0)
    assert_same_batches(list(islice(loader, 3)), first[:3])  # an interrupted epoch
    dataset.load_state_dict(state)
    assert len(loader) == len(first) - 5
    assert_same_batches(list(loader), per_sample_epoch(fresh(2))[5:])
    assert [w.pid for w in loader.dataloader._iterator._workers] == pids  # never restarted
    del first
    gc.collect()
    assert int(loader.spec.flags.sum()) == 0  # every slot back in its pool once its batch is gone


def test_slots_are_reused_without_overwriting_kept_batches(ecg_store):
    data = zarr.open_group(str(ecg_store / "zarr"), mode="r")["ecg"][:]
    dataset = StreamingDataset(str(ecg_store), batch_size=2, num_workers=2, seed=1, shuffle_buffer=4)
    loader = dataset.loader(prefetch_factor=1)
    for inline in (StreamingDataset(str(ecg_store), batch_size=2, seed=1, shuffle_buffer=4), None):
        kept, seen = [], 0
        for i, batch in enumerate(inline if inline is not None else loader):
            rows = batch["row"][~batch["pad"]].numpy()
            np.testing.assert_array_equal(batch["ecg"][~batch["pad"]].numpy(), data[rows])
            if i % 3 == 0:
                kept.append((batch, batch["ecg"].clone()))
            seen += len(rows)
        assert seen == len(data)
        for batch, copy in kept:
            torch.testing.assert_close(batch["ecg"], copy, rtol=0, atol=0)
    receiver = loader.receiver
    assert 0 < len(receiver.slots) <= loader.spec.flags.numel()  # slots were reused, not one per batch


def test_the_index_reads_only_the_manifest_columns_it_uses_and_matches_a_full_read(ecg_store, monkeypatch):
    """``StoreIndex.load`` reads the columns it needs (and those a filter names, dict or expression): the
    fingerprints (``fp_sketch``: about 540 bytes a row, most of a manifest) stay on disk.  What it
    builds is what the whole manifest gives, computed here from a full read."""
    from physiofm.train.data.index import StoreIndex

    read = []
    real = pl.read_parquet
    monkeypatch.setattr(
        pl,
        "read_parquet",
        lambda source, columns=None, **kw: read.append(columns) or real(source, columns=columns, **kw),
    )
    index = StoreIndex.load(str(ecg_store), labels=["age"], filters=(pl.col("sex") == "female") & ~pl.col("q_flat"))
    manifest_columns = [c for c in read if c and "key" in c]
    assert len(manifest_columns) == 1 and {"sex", "q_flat", "age", "key"} <= set(manifest_columns[0])
    assert not {"fp_sketch", "fp_signal", "source_path", "record_id"} & set(manifest_columns[0])

    full = real(ecg_store / "manifest.parquet").with_row_index("_row")
    chosen = full.filter((pl.col("sex") == "female") & ~pl.col("q_flat")).sort("shard", "shard_pos")
    assert 0 < len(index) < full.height
    assert index.rows.tolist() == chosen["_row"].to_list() and index.keys == chosen["key"].to_list()
    expected = chosen["age"].cast(pl.Float32).fill_null(float("nan")).to_numpy()
    np.testing.assert_array_equal(index.labels[:, 0], expected)
    np.testing.assert_array_equal(index.lead_mask, np.array(chosen["ecg_lead_mask"].to_list(), dtype=bool))
    with pytest.raises(ValueError, match="lacks"):
        StoreIndex.load(str(ecg_store), filters={"no_such_column": 1})
