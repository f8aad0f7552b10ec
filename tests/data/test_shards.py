"""`mgm data shard` and ShardStream: shards with the images inside, read lazily per rank and worker, bad input counted
and named, and a resumed stream that gives exactly the samples an uninterrupted one would."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from minigemini import MiniGeminiProcessor
from minigemini.data import DataError, MiniGeminiCollator, Skip
from minigemini.data.shards import open_shards
from minigemini.data.stream import ShardStream
from minigemini.datatools.shard import write_shards
from tests.helpers.cli import data_main
from tests.helpers.training import caption_records, conversation, make_model_dir, write_images, write_jsonl


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    return MiniGeminiProcessor.from_pretrained(make_model_dir(tmp_path_factory.mktemp("mgm")))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """40 records: captions (some of them text-only questions), one corrupt image, one missing image."""
    folder = tmp_path_factory.mktemp("source")
    names = write_images(folder / "images", 4)
    (folder / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    records = caption_records([names[i % 4] for i in range(36)])
    for i, record in enumerate(records):
        record["id"] = f"s{i}"
    records += [
        conversation("Is a cat an animal?", "Yes, it is."),
        conversation("<image>\nWhat is it?", "Noise.", image="corrupt.png"),
        conversation("<image>\nWhat is it?", "Nothing.", image="gone.png"),
        conversation("Say something long.", "Something " * 20),
    ]
    return write_jsonl(folder / "train.jsonl", records), str(folder / "images")


def stream(path, processor, **kwargs):
    settings = {"template": "vicuna_v1", "max_length": 256, "batch_size": 2, "num_workers": 0, "buffer_size": 5}
    return ShardStream(path, processor, **{**settings, **kwargs})


def sources_of(dataset, epoch=0, **loader):
    """Each micro-batch of one epoch as its samples' sources (skipped ones as 'reason:source')."""
    dataset.set_epoch(epoch)
    return list(dataset.loader(collate_fn=lambda items: [label(item) for item in items], **loader))


def label(item):
    return f"{item.reason}:{item.source}" if isinstance(item, Skip) else item["source"]


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_shard_writes_images_inside_skips_bad_images_and_resumes(tmp_path, source, processor, fmt, capsys):
    data, images = source
    out = tmp_path / "shards"
    argv = ["shard", data, "--image-folder", images, "-o", str(out), "--format", fmt]
    argv += ["--shard-size", "8", "--no-progress"]
    assert data_main(argv) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"] == 40 and manifest["samples"] == 38 and len(manifest["shards"]) == 5
    assert manifest["skipped"] == {"missing_image": 1, "unreadable_image": 1}
    assert "corrupt.png" in manifest["skipped_examples"]["unreadable_image"][0]
    assert "gone.png" in manifest["skipped_examples"]["missing_image"][0] and "38 samples of 40 records" in printed
    assert sum(s["samples"] for s in manifest["shards"]) == 38
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temporary file left

    shards = open_shards(str(out))
    assert [s.rows for s in shards] == [s["samples"] for s in manifest["shards"]]
    # every sample decodes with its image; the corrupt one was never written
    everything = sources_of(stream(str(out), processor, buffer_size=1))
    assert len([s for batch in everything for s in batch]) == 38 - 38 % 2  # the quota: whole steps
    assert not any(":" in s for batch in everything for s in batch)

    # a rerun after a lost shard writes that shard again and nothing else
    lost = out / manifest["shards"][2]["file"]
    kept = out / manifest["shards"][0]["file"]
    mtime = os.path.getmtime(kept)
    lost.unlink()
    assert data_main(argv) == 0
    assert "(1 written now)" in capsys.readouterr().out and lost.is_file() and os.path.getmtime(kept) == mtime
    assert json.loads((out / "manifest.json").read_text())["shards"] == manifest["shards"]
    # another run's settings in the same folder: one clear error
    assert data_main(["shard", data, "-o", str(out), "--format", fmt, "--shard-size", "4", "--no-progress"]) == 2
    assert "holds shards of another run" in capsys.readouterr().err


def test_shard_leaves_out_image_paths_outside_the_image_folder(tmp_path, source):
    images = source[1]
    absolute = os.path.join(images, "img0.png")
    records = [conversation("<image>\nA?", "A.", image=name) for name in ("img0.png", "../images/img1.png", absolute)]
    argv = ["shard", write_jsonl(tmp_path / "paths.jsonl", records), "--image-folder", images]
    assert data_main([*argv, "-o", str(tmp_path / "shards"), "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["samples"] == 1 and manifest["skipped"] == {"bad_image_path": 2}
    assert "leaves the image folder" in manifest["skipped_examples"]["bad_image_path"][0]
    assert f"absolute image path {absolute}" in manifest["skipped_examples"]["bad_image_path"][1]


def test_hugging_face_reads_the_parquet_shards(tmp_path, source):
    import datasets

    data, images = source
    write_shards([data], tmp_path / "pq", [images], "parquet", 16, progress=False)
    rows = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "pq" / "*.parquet"), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert len(rows) == 38 and rows[0]["images"][0].size == (20, 12)
    assert rows[0]["conversations"][0]["from"] == "human" and rows[0]["id"] == "s0"


@pytest.fixture(scope="module")
def shards(tmp_path_factory, source):
    data, images = source
    root = tmp_path_factory.mktemp("shards")
    for fmt in ("parquet", "webdataset"):
        write_shards([data], root / fmt, [images], fmt, 4, progress=False)
    return root


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_ranks_and_workers_read_disjoint_shards_and_resume_exactly(shards, processor, fmt):
    """2 ranks x 2 workers, two epochs, modality-length groups: stopping after any number of micro-batches and
    resuming gives each rank exactly the rest of the uninterrupted run's batches."""
    path = str(shards / fmt)
    settings = {"world_size": 2, "num_workers": 2, "length_group": 2}
    full = {rank: [sources_of(stream(path, processor, rank=rank, **settings), e) for e in (0, 1)] for rank in (0, 1)}
    per_epoch = len(full[0][0])
    assert per_epoch == len(full[1][0]) > 2  # equal steps on both ranks
    for epoch in (0, 1):
        seen = [s for rank in (0, 1) for batch in full[rank][epoch] for s in batch]
        assert len(seen) == len(set(seen))  # nothing twice in an epoch
        shard_sets = [{s.split("#")[0] for b in full[r][epoch] for s in b} for r in (0, 1)]
        assert not shard_sets[0] & shard_sets[1]  # each rank its own shards
    assert full[0][0] != full[0][1]  # another order in the next epoch

    for rank in (0, 1):
        for done in (1, 3, per_epoch + 2):  # mid-epoch (odd: the workers' turn is rotated), into the 2nd epoch
            resumed = stream(path, processor, rank=rank, **settings)
            resumed.resume(done)
            epoch, offset = divmod(done, per_epoch)
            rest = sources_of(resumed, epoch)
            assert rest == full[rank][epoch][offset:], (rank, done)


def test_length_groups_hold_one_modality(shards, processor):
    """One group over the whole epoch: image samples and the two text-only ones never share a micro-batch."""
    batches = sources_of(stream(str(shards / "parquet"), processor, length_group=19, buffer_size=40))
    text_only = {"parquet/shard-00009.parquet#0", "parquet/shard-00009.parquet#1"}  # records 36, 39 (37, 38 left out)
    assert text_only in [set(batch) for batch in batches] and sum(len(b) for b in batches) == 38


def test_samples_cut_to_max_length_are_counted_by_the_collator(shards, processor):
    """A streamed sample cut to max_length (image tokens and an answer kept) is marked; the collator counts it in the
    batch's data_stats, which the trainer adds up for the run's summary."""
    path = str(shards / "parquet")
    lengths = {
        item["source"]: len(item["input_ids"])
        for batch in stream(path, processor).loader(collate_fn=list)
        for item in batch
    }
    longest = max(lengths.values())
    cut = sorted(lengths.values())[-3]  # the two longest samples are over it, unless they tie with the third
    over = [source for source, n in lengths.items() if n > cut]
    assert over and longest > cut
    collator = MiniGeminiCollator(pad_token_id=processor.tokenizer.pad_token_id)
    batches = list(stream(path, processor, max_length=cut).loader(collate_fn=collator))
    assert sum(b["data_stats"].get("truncated", 0) for b in batches) == len(over)
    assert max(b["input_ids"].shape[1] for b in batches) == cut
    assert sum(b["data_stats"]["samples"] for b in batches) == len(lengths)  # cut, not skipped


def test_bad_shards_are_named_skips_or_one_clear_error(tmp_path, shards, processor):
    wds = tmp_path / "wds"
    shutil.copytree(shards / "webdataset", wds)
    # a truncated tar against its manifest: one clear error before training
    tar = wds / "shard-00001.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(DataError, match="shard-00001.tar has .* bytes; the file has"):
        stream(str(wds), processor)
    # without the manifest: the readable part counted, the rest a named skip
    (wds / "manifest.json").unlink()
    dataset = stream(str(wds), processor)
    assert (
        dataset.skips.counts["unreadable_shard"] == 1
        and "shard-00001.tar#" in dataset.skips.examples["unreadable_shard"][0]
    )

    # a corrupt image inside a shard and a row without conversations: skipped items in their place, named
    pq_dir = tmp_path / "pq"
    shutil.copytree(shards / "parquet", pq_dir)
    table = pq.read_table(pq_dir / "shard-00000.parquet")
    rows = table.to_pylist()
    rows[0]["images"][0]["bytes"] = b"\x89PNG\r\n\x1a\n broken"
    rows[1]["conversations"] = None
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), pq_dir / "shard-00000.parquet")
    (pq_dir / "manifest.json").unlink()  # its sizes and checksums no longer hold
    seen = [s for batch in sources_of(stream(str(pq_dir), processor, buffer_size=1)) for s in batch]
    assert "unreadable_image:pq/shard-00000.parquet#0" in seen and "bad_record:pq/shard-00000.parquet#1" in seen

    # a shard that disappears mid-run: each of its samples a named unreadable_shard skip, the others read on
    dataset = stream(str(pq_dir), processor, buffer_size=1)
    order = [s for batch in sources_of(dataset) for s in batch]
    victim = order[-1].split(":")[-1].split("#")[0]
    iterator = iter(dataset)
    next(iterator)
    (pq_dir / os.path.basename(victim)).unlink()
    rest = [label(item) for item in iterator]
    lost = [s for s in rest if s.startswith("unreadable_shard:")]
    assert lost and all(victim in s for s in lost) and len(rest) == len(order) - 1

    # a sample whose cut would drop its image tokens: a too_long skip in its place
    short = [s for batch in sources_of(stream(str(shards / "parquet"), processor, max_length=12)) for s in batch]
    assert short and all(s.startswith("too_long:") for s in short if "#0" in s or "#1" in s)

    # a shard without the conversation column, or a manifest whose count disagrees: one clear error
    bare = tmp_path / "bare"
    bare.mkdir()
    pq.write_table(pa.table({"id": ["a"], "images": [[]]}), bare / "x.parquet")
    with pytest.raises(DataError, match="has no 'conversations' column"):
        stream(str(bare), processor)
    manifest = json.loads((shards / "parquet" / "manifest.json").read_text())
    manifest["shards"][0]["samples"] += 1
    wrong = tmp_path / "wrong"
    shutil.copytree(shards / "parquet", wrong)
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="says shard-00000.parquet has 5 samples; the file has 4"):
        stream(str(wrong), processor)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_skip_met_while_reading_is_counted_once_whatever_the_workers(tmp_path, shards, processor, workers):
    """The trainer counts the skips the batches carry and adds the stream's own (found while opening): a skip met
    while reading is in the batches only, also when the stream runs in the main process (issue 48: 8 unreadable
    samples were reported as 16 with --dataloader-workers 0)."""
    folder = tmp_path / "pq"
    shutil.copytree(shards / "parquet", folder)
    for path in sorted(folder.glob("*.parquet")):  # row 0 of every shard is not a record
        table = pq.read_table(path)
        rows = table.to_pylist()
        rows[0]["conversations"] = None
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    (folder / "manifest.json").unlink()
    dataset = stream(str(folder), processor, buffer_size=1, num_workers=workers)
    collator = MiniGeminiCollator(pad_token_id=processor.tokenizer.pad_token_id)
    met = [skip for batch in dataset.loader(collate_fn=collator) for skip in batch["data_stats"]["skipped"]]
    assert len(met) >= max(1, workers) and {skip.reason for skip in met} == {"bad_record"}
    assert dataset.skips.total == 0  # what the summary adds to the batches' skips: none were found while opening


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_stats_reads_shards_as_it_reads_json(shards, source, fmt, capsys):
    assert data_main(["stats", str(shards / fmt), "--verify-images"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("38 records") and "by modality: image 36, text 2" in printed
    assert "36 referenced, 36 unique, 0 missing, 0 unreadable" in printed


def test_a_hugging_face_dataset_by_name_streams_from_its_arrow_files(tmp_path, shards, processor, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no hub here: fail at once, not after retries
    folder = tmp_path / "hub_copy"  # what load_dataset(NAME) finds: Parquet files (a local folder stands in here)
    folder.mkdir()
    for shard in sorted((shards / "parquet").glob("*.parquet")):
        shutil.copy(shard, folder)
    dataset = stream(f"hf:{folder}", processor)
    assert all(s.format == "arrow" and str(tmp_path / "cache") in s.path for s in dataset.shards)
    assert dataset.num_samples == 38
    seen = [s for batch in sources_of(dataset) for s in batch]
    assert len(seen) == 38 and not any(":" in s for s in seen)  # every row a usable sample, images decoded
    with pytest.raises(DataError, match="cannot load the dataset"):
        stream("hf:no/such-dataset-here", processor)


def test_an_unreadable_parquet_file_or_manifest_is_one_clear_error(tmp_path, processor):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="broken.parquet is not a readable parquet shard"):
        stream(str(tmp_path / "broken.parquet"), processor)
    folder = tmp_path / "with_manifest"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": "parquet", "shards": [{"file": "a.parquet"}]}))
    with pytest.raises(DataError, match="is not a readable shard manifest"):
        stream(str(folder), processor)
