"""open_run_data: training images without labels (folders at any depth, image lists, npz x_train, any dataset) and
a separate labelled evaluation set, or none (a seeded held-out slice for the label-free metrics)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from edge_encoder.imagedata import (
    DatasetError,
    FolderImages,
    load_dataset,
    open_run_data,
)
from edge_encoder.imagedata.config import DataSettings
from edge_encoder.imagedata.run_data import NO_EVAL_SET, RunData, run_specs
from edge_encoder.imagedata.unlabelled import read_image_list

from tests.imagedata.test_layouts import write_images, write_split_tree


def _stack(images) -> np.ndarray:
    return images if isinstance(images, np.ndarray) else np.stack([images[i] for i in range(len(images))])


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    """40 unlabelled images: 20 directly in the folder, 20 nested two levels deep (no class structure)."""
    write_images(tmp_path / "flat", 20, ".png", seed=1)
    write_images(tmp_path / "flat" / "2019" / "trip", 20, ".JPG", seed=2)
    return tmp_path / "flat"


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    return write_split_tree(tmp_path / "labelled", "val", {"a": (6, 3), "b": (6, 3)})


def test_specs_follow_the_documented_rule() -> None:
    assert run_specs(DataSettings(dataset="digits")) == ("digits", "digits")
    assert run_specs(DataSettings(dataset="digits", train_data="images:/x")) == ("images:/x", None)
    assert run_specs(DataSettings(dataset="digits", train_data="images:/x", eval_data="folder:/y")) == ("images:/x", "folder:/y")
    assert run_specs(DataSettings(dataset="digits", eval_data="folder:/y")) == ("digits", "folder:/y")


def test_training_on_a_flat_folder_alone_holds_a_seeded_slice_out(flat: Path) -> None:
    settings = DataSettings(train_data=f"folder:{flat}", image_size=8, test_fraction=0.25)
    data = open_run_data(settings)
    assert data.evaluation is None and data.accuracy_note == NO_EVAL_SET
    assert (len(data.train_images), len(data.heldout)) == (30, 10)  # 25 % of 40, every depth counted
    assert data.train_images.shape[1:] == (8, 8, 3) and data.heldout.dtype == np.uint8
    # the held-out images are never trained on: no row of one equals a row of the other
    train_rows = {row.tobytes() for row in data.train_images}
    assert not any(row.tobytes() in train_rows for row in data.heldout)
    again = open_run_data(settings)
    np.testing.assert_array_equal(again.heldout, data.heldout)  # seeded
    summary = data.summary()
    assert summary["labelled"] is False and summary["num_train"] == 30 and summary["num_test"] == 10
    assert "held out of the training images, never trained on" in summary["held_out_images"]
    assert data.train_summary()["labels_used"] is False and data.train_summary()["held_out"] == 10


def test_the_held_out_slice_is_capped_by_max_test(flat: Path) -> None:
    data = open_run_data(DataSettings(train_data=f"images:{flat}", image_size=8, max_test=4, max_train=11))
    assert (len(data.train_images), len(data.heldout)) == (11, 4)


def test_train_data_beside_a_labelled_eval_set(flat: Path, labelled: Path) -> None:
    data = open_run_data(DataSettings(train_data=f"folder:{flat}", eval_data=f"folder:{labelled}", image_size=8))
    assert len(data.train_images) == 40 and data.accuracy_note is None
    evaluation = data.evaluation
    assert evaluation is not None and evaluation.class_names == ("a", "b")
    assert (len(evaluation.x_train), len(evaluation.x_test)) == (12, 6)
    assert data.heldout is evaluation.x_test
    assert data.summary()["labelled"] is True and data.summary()["layout"].startswith("train/ + val/")


def test_evaluation_queries_are_never_trained_on(tmp_path: Path) -> None:
    for c in ("a", "b"):
        write_images(tmp_path / "tree" / c, 10, seed=ord(c))
    tree = tmp_path / "tree"
    data = open_run_data(DataSettings(train_data=f"images:{tree}", eval_data=f"folder:{tree}", image_size=8))
    same = open_run_data(DataSettings(dataset=f"folder:{tree}", image_size=8))
    assert data.evaluation is not None
    assert len(data.train_images) == len(same.train_images) == 16 and data.train_summary()["excluded_eval_images"] == 4
    queries = {row.tobytes() for row in data.evaluation.x_test}
    assert not any(row.tobytes() in queries for row in data.train_images)


def test_one_dataset_for_both_roles_is_what_it_always_was(tmp_path: Path) -> None:
    root = write_split_tree(tmp_path / "tree", "test", {"a": (5, 2), "b": (5, 2)})
    data = open_run_data(DataSettings(dataset=f"folder:{root}", image_size=8, max_train=6))
    expected = load_dataset(f"folder:{root}", image_size=8, max_train=6)
    np.testing.assert_array_equal(data.train_images, expected.x_train)
    assert data.evaluation is not None and data.evaluation.summary() == expected.summary()
    assert RunData.from_splits(expected).train_summary()["source"] == "the train split of the evaluation set"


def test_an_image_list_names_paths_relative_to_itself_or_absolute(tmp_path: Path, flat: Path) -> None:
    files = sorted(flat.glob("*.png"))
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    lines = ["# my images", "", *(os.path.relpath(f, listing.parent) for f in files[:5]), str(files[5]), "  "]
    listing.write_text("\n".join(lines) + "\n")
    paths, missing = read_image_list(listing)
    assert paths == [listing.parent / os.path.relpath(f, listing.parent) for f in files[:5]] + [files[5]]
    assert missing == []
    data = open_run_data(DataSettings(train_data=f"list:{listing}", image_size=8))
    assert len(data.train_images) + len(data.heldout) == 6
    listing.write_text(f"{files[0]}\nnope/missing.png\n")
    with pytest.raises(DatasetError, match=r"train.txt, line 2: .*nope/missing.png does not exist"):
        open_run_data(DataSettings(train_data=f"list:{listing}", image_size=8))
    write_images(tmp_path / "others", 3)
    kept = open_run_data(DataSettings(train_data=f"list:{listing}", image_size=8, skip_corrupt=True,
                                      eval_data=f"images:{tmp_path / 'others'}"))
    assert len(kept.train_images) == 1
    assert kept.train_summary()["skipped_files"] == [str(listing.parent / "nope" / "missing.png")]
    with pytest.raises(DatasetError, match="image list .*absent.txt does not exist"):
        open_run_data(DataSettings(train_data=f"list:{tmp_path / 'absent.txt'}", image_size=8))


def test_an_npz_with_only_x_train_trains_and_fits_the_eval_set_to_its_size(tmp_path: Path, labelled: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (30, 10, 10), dtype=np.uint8)  # grey: replicated to RGB
    np.savez(tmp_path / "unlabelled.npz", x_train=images)
    data = open_run_data(DataSettings(train_data=f"npz:{tmp_path / 'unlabelled.npz'}", eval_data=f"folder:{labelled}"))
    assert data.train_images.shape == (30, 10, 10, 3) and data.evaluation is not None
    assert data.evaluation.image_shape == (10, 10, 3)  # fitted to the training images' own size
    np.savez(tmp_path / "other.npz", images=images)
    with pytest.raises(DatasetError, match=r"lacks the keys \['x_train'\]"):
        open_run_data(DataSettings(train_data=f"npz:{tmp_path / 'other.npz'}"))


def test_a_named_dataset_gives_its_train_split_without_labels(labelled: Path) -> None:
    data = open_run_data(DataSettings(train_data="digits", eval_data=f"folder:{labelled}", image_size=8))
    assert len(data.train_images) == 1437 and data.evaluation is not None  # digits' 80 % train split


def test_an_eval_set_given_without_labels_feeds_the_label_free_metrics(flat: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "other", 7)
    data = open_run_data(DataSettings(train_data=f"folder:{flat}", eval_data=f"images:{tmp_path / 'other'}", image_size=8))
    assert data.evaluation is None and len(data.heldout) == 7 and len(data.train_images) == 40
    assert data.accuracy_note == f"the evaluation set images:{tmp_path / 'other'} has no labels"


def test_streamed_training_images_equal_the_decoded_ones(flat: Path) -> None:
    common = dict(train_data=f"folder:{flat}", image_size=8, max_train=25)
    decoded = open_run_data(DataSettings(**common))
    streamed = open_run_data(DataSettings(**common, stream=True))
    assert isinstance(streamed.train_images, FolderImages) and isinstance(streamed.heldout, FolderImages)
    np.testing.assert_array_equal(_stack(streamed.train_images), decoded.train_images)
    np.testing.assert_array_equal(_stack(streamed.heldout), decoded.heldout)
    assert streamed.train_images.fingerprint() != streamed.heldout.fingerprint()


def test_bad_training_specs_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        open_run_data(DataSettings(train_data=f"images:{tmp_path / 'nope'}", image_size=8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        open_run_data(DataSettings(train_data=f"images:{tmp_path / 'empty'}", image_size=8))
    write_images(tmp_path / "one", 1)
    with pytest.raises(DatasetError, match="at least 2 are needed"):
        open_run_data(DataSettings(train_data=f"images:{tmp_path / 'one'}", image_size=8))
    write_images(tmp_path / "photos", 3)
    with pytest.raises(DatasetError, match="set data.image_size"):
        open_run_data(DataSettings(train_data=f"images:{tmp_path / 'photos'}"))
    with pytest.raises(ValueError, match="'data.stream'"):
        DataSettings(train_data="digits", stream=True)


def test_an_unlabelled_dataset_for_both_roles_trains_and_measures_no_accuracy(flat: Path) -> None:
    data = open_run_data(DataSettings(dataset=f"folder:{flat}", image_size=8))
    assert data.evaluation is None and (len(data.train_images), len(data.heldout)) == (32, 8)
    assert data.accuracy_note == f"the dataset folder:{flat} has no labels"
    assert data.summary()["layout"] == "unlabelled images"


def _eval_tree(tmp_path: Path) -> Path:
    for c in ("a", "b"):
        write_images(tmp_path / "eval" / c, 10, seed=ord(c))
    return tmp_path / "eval"


def _queries_never_trained(data: RunData) -> None:
    assert data.evaluation is not None
    queries = {row.tobytes() for row in data.evaluation.x_test}
    assert not any(row.tobytes() in queries for row in data.train_images)


@pytest.mark.parametrize("how", ["symlinks", "hard links", "symlinked folder", "list through a symlink"])
def test_queries_reached_by_another_path_are_never_trained_on(tmp_path: Path, how: str) -> None:
    # issue 18, point 8: the same file by a symlink, a hard link, a symlinked folder or a list: entry through a
    # symlink is excluded (compared by device and inode, not by path string) and counted
    tree = _eval_tree(tmp_path)
    files = sorted(tree.rglob("*.png"))
    train = tmp_path / "train"
    write_images(train / "own", 5, seed=99)
    if how == "symlinked folder":
        (train / "alias").symlink_to(tree, target_is_directory=True)  # list_images does not follow it: list it
        spec = f"images:{train / 'alias'}"
    elif how == "list through a symlink":
        (tmp_path / "via").symlink_to(tree, target_is_directory=True)
        listing = tmp_path / "train.txt"
        listing.write_text("\n".join(f"via/{f.relative_to(tree)}" for f in files) + "\n")
        spec = f"list:{listing}"
    else:
        for f in files:
            target = train / "linked" / f.parent.name / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f) if how == "symlinks" else os.link(f, target)
        spec = f"images:{train}"
    data = open_run_data(DataSettings(train_data=spec, eval_data=f"folder:{tree}", image_size=8))
    own = 5 if spec == f"images:{train}" else 0
    assert data.train_summary()["excluded_eval_images"] == 4  # the 4 queries (20 % of 2 x 10), however reached
    assert data.train_summary()["excluded_eval_duplicates"] == 0
    assert len(data.train_images) == 16 + own
    _queries_never_trained(data)


def test_byte_identical_copies_of_queries_are_excluded_and_counted_apart(tmp_path: Path) -> None:
    import shutil

    from edge_encoder.imagedata.folder import list_folder

    tree = _eval_tree(tmp_path)
    copies = tmp_path / "copies"
    shutil.copytree(tree, copies)  # another file with the same bytes: not the same inode
    (copies / "a" / "000.png").unlink()
    shutil.copy(tree / "b" / "001.png", copies / "renamed.png")
    queries = {(p.parent.name, p.name) for p, _ in list_folder(tree, 0.2, 0)[2]}
    expected = len(queries - {("a", "000.png")}) + (("b", "001.png") in queries)
    data = open_run_data(DataSettings(train_data=f"images:{copies}", eval_data=f"folder:{tree}", image_size=8))
    info = data.train_summary()
    assert info["excluded_eval_duplicates"] == expected > 0 and info["excluded_eval_images"] == 0
    assert len(data.train_images) == 20 - expected
    _queries_never_trained(data)


def test_eval_files_tell_a_copy_from_a_file_sharing_its_first_64_kib(tmp_path: Path) -> None:
    from edge_encoder.imagedata.eval_files import HEAD_BYTES, EvalFiles

    body = np.random.default_rng(0).integers(0, 256, HEAD_BYTES + 1000, dtype=np.uint8).tobytes()
    query, copy, other = tmp_path / "q.bin", tmp_path / "copy.bin", tmp_path / "other.bin"
    query.write_bytes(body)
    copy.write_bytes(body)
    other.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # same size, same head, another tail
    (tmp_path / "link.bin").symlink_to(query)
    files = EvalFiles([query])
    assert files.match(tmp_path / "link.bin") == files.match(tmp_path / "." / "q.bin") == "same"
    assert files.match(copy) == "copy" and files.match(other) is None
    assert files.match(tmp_path / "missing.bin") is None
    kept, same, copies = files.split([query, copy, other])
    assert (kept, same, copies) == ([other], 1, 1)


def _one_class_npz(path: Path, class_names: list[str] | None) -> Path:
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8), y_train=np.zeros(8, np.int64),
                  x_test=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), y_test=np.zeros(4, np.int64))
    np.savez(path, **arrays, **({} if class_names is None else {"class_names": np.array(class_names)}))
    return path


@pytest.mark.parametrize("make", ["folder", "folder_stream", "npz", "npz_named", "eval_data"])
def test_a_labelled_set_of_one_class_is_refused_every_figure_would_read_one(tmp_path: Path, make: str) -> None:
    """Every kNN answer is right when there is one class: a report of 1.0 everywhere said nothing of the encoder."""
    write_images(tmp_path / "cats" / "cat", 10)
    spec = {"folder": f"folder:{tmp_path / 'cats'}", "folder_stream": f"folder:{tmp_path / 'cats'}",
            "npz": f"npz:{_one_class_npz(tmp_path / 'one.npz', None)}",
            "npz_named": f"npz:{_one_class_npz(tmp_path / 'named.npz', ['cat', 'dog', 'emu'])}",
            "eval_data": f"folder:{tmp_path / 'cats'}"}[make]
    settings = (DataSettings(train_data=f"images:{tmp_path / 'cats'}", eval_data=spec, image_size=8)
                if make == "eval_data" else DataSettings(dataset=spec, image_size=8, stream=make == "folder_stream"))
    with pytest.raises(DatasetError) as info:
        open_run_data(settings)
    message = str(info.value)
    name = "'0'" if make == "npz" else "'cat'"  # an npz without class_names names its labels by number
    assert f"{spec} has images of one class only ({name})" in message and "--train-data" in message
    assert "\n" not in message


def test_a_one_class_folder_still_trains_as_unlabelled_images(tmp_path: Path) -> None:
    write_images(tmp_path / "cats" / "cat", 10)
    data = open_run_data(DataSettings(train_data=f"folder:{tmp_path / 'cats'}", image_size=8))
    assert data.evaluation is None and len(data.train_images) + len(data.heldout) == 10


def test_a_labelled_set_whose_test_classes_have_no_train_image_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "disjoint.npz"
    np.savez(path, x_train=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), y_train=np.array([0, 0, 0, 1, 1, 1]),
             x_test=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), y_test=np.array([2, 2, 3, 3]))
    with pytest.raises(DatasetError, match="no test image's class has a train image"):
        open_run_data(DataSettings(dataset=f"npz:{path}", image_size=8))


@pytest.mark.parametrize("key, spec", [("dataset", "folder:"), ("dataset", "npz: "), ("train_data", "images:"),
                                       ("eval_data", "list:")])
def test_a_spec_naming_no_path_is_refused_not_read_as_the_current_folder(key: str, spec: str) -> None:
    """``folder:`` alone trained and reported on every image under the working directory."""
    with pytest.raises(ValueError, match=f"config key 'data.{key}': names no path: give {spec.split(':')[0]}:"):
        DataSettings(**{key: spec}, **({} if key == "dataset" else {"dataset": "digits"}))
