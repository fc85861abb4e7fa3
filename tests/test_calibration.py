import numpy as np
import pytest
from PIL import Image

from conftest import write_images
from xception_edge.calibration import build_calibration, open_source, sample_order, write_list
from xception_edge.errors import BadInput
from xception_edge.preprocess import PreprocessSpec

SPEC = PreprocessSpec(71, 71)


def test_folder_with_class_subfolders_is_sampled_balanced_and_deterministic(image_folder):
    src = open_source(image_folder)
    assert src.classes == ("a", "b", "c") and len(src.files) == 36
    a = build_calibration(src, SPEC, 12, seed=3)
    b = build_calibration(src, SPEC, 12, seed=3)
    c = build_calibration(src, SPEC, 12, seed=4)
    assert a.files == b.files and a.files != c.files
    counts = {k: sum(1 for f in a.files if f.parent.name == k) for k in "abc"}
    assert counts == {"a": 4, "b": 4, "c": 4}
    assert a.images.shape == (12, 71, 71, 3) and a.images.dtype == np.float32
    assert len(set(a.sha256)) == 12


def test_list_text_round_trips_and_checks_hashes(image_folder, tmp_path):
    cal = build_calibration(open_source(image_folder), SPEC, 10, seed=0)
    listing = tmp_path / "used.txt"
    listing.write_text(cal.list_text())
    again = build_calibration(open_source(listing, image_folder), SPEC, 10, seed=0)
    assert sorted(again.files) == sorted(cal.files)
    # a file changed after the list was written is caught by its sha256
    Image.new("RGB", (10, 10), (1, 2, 3)).save(cal.files[0])
    with pytest.raises(BadInput, match="sha256"):
        build_calibration(open_source(listing, image_folder), SPEC, 10, seed=0)


def test_calibration_make_writes_relative_mlperf_style_list(image_folder, tmp_path):
    out = tmp_path / "lists" / "cal.txt"
    n = write_list(open_source(image_folder), 9, 0, out)
    lines = [l for l in out.read_text().splitlines() if not l.startswith("#")]
    assert n == 9 and len(lines) == 9 and all(not l.startswith("/") for l in lines)
    assert {l.split("/")[0] for l in lines} == {"a", "b", "c"}
    src = open_source(out, image_folder)
    assert len(src.files) == 9


def test_list_file_errors(image_folder, tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("a/a_000.png\na/missing.png\n")
    with pytest.raises(BadInput, match="missing file"):
        open_source(lst, image_folder)
    lst.write_text("../outside.png\n")
    with pytest.raises(BadInput, match="outside the list's root"):
        open_source(lst, image_folder)
    lst.write_text("/etc/passwd\n")
    with pytest.raises(BadInput, match="outside the list's root"):
        open_source(lst, image_folder)


def test_empty_folder_and_too_few_decodable(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="holds no images"):
        open_source(tmp_path / "empty")
    bad = tmp_path / "bad"
    write_images(bad, classes=("x",), per_class=4)
    for i in range(20):
        (bad / f"junk{i}.jpg").write_bytes(b"" if i % 2 else b"\xff\xd8\xff garbage")
    with pytest.raises(BadInput, match="only 4 image"):
        build_calibration(open_source(bad), SPEC, 300, seed=0)


def test_undecodable_files_are_skipped_listed_and_replaced(tmp_path, capsys):
    root = write_images(tmp_path / "imgs", classes=("x",), per_class=15)
    (root / "x" / "zero.png").write_bytes(b"")
    (root / "x" / "text.jpg").write_text("hello")
    src = open_source(root)
    order = [src.files[i].name for i in sample_order(src, 0)]
    first_bad, second_bad = sorted((order.index("zero.png"), order.index("text.jpg")))
    assert 0 < first_bad < second_bad - 1  # seed 0: good images before, between and after the bad ones
    # as many images as decode before the second bad one: the first bad one is met, skipped and replaced
    n = second_bad - 1
    cal = build_calibration(open_source(root), SPEC, n, seed=0)
    assert len(cal) == n and len(cal.skipped) == 1 and order[first_bad] in cal.skipped[0]
    assert [f.name for f in cal.files] == [name for name in order[:second_bad] if name != order[first_bad]]
    cal = build_calibration(open_source(root), SPEC, 15, seed=0)
    assert len(cal) == 15 and len(cal.skipped) == 2  # every decodable image is needed: both bad ones are met
    cal_all = build_calibration(open_source(root), SPEC, 17, seed=0)
    assert len(cal_all) == 15 and len(cal_all.skipped) == 2
    err = capsys.readouterr().err
    assert "zero.png" in err and "text.jpg" in err and "could not be decoded" in err


def test_num_must_be_positive(image_folder):
    with pytest.raises(BadInput, match="at least 1"):
        build_calibration(open_source(image_folder), SPEC, 0, seed=0)


def test_sample_order_without_classes_is_a_permutation(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(7):
        Image.new("RGB", (8, 8), (i, i, i)).save(root / f"{i}.png")
    src = open_source(root)
    assert src.classes is None
    assert sorted(sample_order(src, 1)) == list(range(7))


def test_duplicate_list_lines_are_used_once_with_a_warning(image_folder, tmp_path, capsys):
    lst = tmp_path / "dup.txt"
    lst.write_text("a/a_000.png\n" * 30 + "b/b_001.png\na/./a_000.png\nc/../b/b_001.png\nc/c_002.png\n")
    src = open_source(lst, image_folder)
    assert [src.rel(f) for f in src.files] == ["a/a_000.png", "b/b_001.png", "c/c_002.png"]
    err = capsys.readouterr().err
    assert "31 duplicate line(s) in" in err and "each image used once" in err and "first on line 1" in err


def test_a_labelled_list_names_each_image_once(image_folder, capsys):
    from xception_edge.dataset import labelled_images

    lst = image_folder / "val.txt"
    lst.write_text("a/a_000.png a\nb/b_000.png b\na/a_000.png a\n")
    data = labelled_images(lst, ["a", "b", "c"])
    assert data.keys == ["a/a_000.png", "b/b_000.png"] and data.targets == (0, 1)
    assert "1 duplicate line(s)" in capsys.readouterr().err
    lst.write_text("a/a_000.png a\nb/b_000.png b\na/a_000.png c\n")
    with pytest.raises(BadInput, match=r"val\.txt:3: 'a/a_000\.png' is listed again \(first on line 1\) with label 'c', not 'a'"):
        labelled_images(lst, ["a", "b", "c"])
    lst.write_text(f"{'0' * 64}  a/a_000.png\n{'1' * 64}  a/a_000.png\n")
    with pytest.raises(BadInput, match="different sha256"):
        open_source(lst)


def test_a_reused_calibration_list_fails_when_an_image_no_longer_decodes(image_folder, tmp_path, capsys):
    cal = build_calibration(open_source(image_folder), SPEC, 12, seed=0)
    listing = tmp_path / "calibration.txt"
    listing.write_text(cal.list_text())
    cal.files[3].write_bytes(b"not an image any more")  # changed and undecodable: never just skipped
    with pytest.raises(BadInput, match=rf"{cal.files[3].name}: sha256 .* differs .* in {listing}"):
        build_calibration(open_source(listing, image_folder), SPEC, 12, seed=0)
    # listed with the sha256 of what is there now, but not an image: the list is wrong
    import hashlib

    junk = image_folder / "a" / "junk.png"
    junk.write_bytes(b"junk")
    listing.write_text(f"{hashlib.sha256(b'junk').hexdigest()}  a/junk.png\n")
    with pytest.raises(BadInput, match=r"junk\.png, listed with its sha256 in .*calibration\.txt, no longer decodes"):
        build_calibration(open_source(listing, image_folder), SPEC, 12, seed=0)


def test_calibration_make_refuses_to_overwrite_and_bad_values(image_folder, tmp_path):
    from click.testing import CliRunner

    from xception_edge.cli import cli

    def run(*args):
        r = CliRunner().invoke(cli, ["calibration", "make", "--from", str(image_folder), "--num", "6", *map(str, args)])
        assert "Traceback" not in r.output
        return r

    out = tmp_path / "cal.txt"
    out.write_text("keep me\n")
    r = run("--out", out)
    assert r.exit_code == 2 and f"--out {out} already exists; pass --force" in r.output
    assert out.read_text() == "keep me\n"
    r = run("--out", out, "--force")
    assert r.exit_code == 0 and len([l for l in out.read_text().splitlines() if not l.startswith("#")]) == 6
    r = run("--out", tmp_path)
    assert r.exit_code == 2 and f"--out {tmp_path} is a folder" in r.output
    r = run("--out", tmp_path / "new.txt", "--seed", "-5")
    assert r.exit_code == 2 and "--seed -5 must be 0 or more" in r.output and not (tmp_path / "new.txt").exists()


def test_convert_refuses_a_negative_seed_before_any_work(tmp_path):
    from xception_edge.errors import BadInput as Bad
    from xception_edge.pipeline import ConvertRequest, precheck

    with pytest.raises(Bad, match=r"--seed -5 must be 0 or more"):
        precheck(ConvertRequest(model="missing.keras", targets=("litert-fp32",), out=tmp_path / "out", seed=-5, verify=False))


def test_list_lines_the_file_system_refuses_are_one_line_errors(image_folder, tmp_path):
    from xception_edge.dataset import labelled_images

    long_name = "x" * 248 + ".png"  # a valid name; with " a" after it, the line is too long to be a name
    Image.new("RGB", (8, 8)).save(image_folder / "a" / long_name)
    lst = image_folder / "long.txt"
    lst.write_text(f"a/{long_name} a\n")
    assert labelled_images(lst, ["a", "b"]).targets == (0,)
    (image_folder / "loop1").symlink_to(image_folder / "loop2")
    (image_folder / "loop2").symlink_to(image_folder / "loop1")
    lst.write_text("loop1/x.png\n")
    with pytest.raises(BadInput, match=r"long\.txt:1: 'loop1/x\.png' cannot be resolved"):
        open_source(lst)
    lst.write_text("a/a_000.png\na/a\x00.png\n")
    with pytest.raises(BadInput, match=r"long\.txt:2: the line holds a NUL byte"):
        open_source(lst)
