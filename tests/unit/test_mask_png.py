"""The one mask reader (``pipeline/core/mask_png.py``) and every stage that reads masks through
it: an LA annotation written like the official DAVIS-2016 ``bear/00077.png`` (8-bit grey +
alpha 255 everywhere) reads to the same labels as its L twin in the source reader, the shard
loader, inference and evaluation; L, 1, P and 16-bit grey are accepted; colour, JPEG, float and
out-of-range files are refused with the reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.loading.decode import decode_mask
from pipeline.core.mask_png import MaskFormatError, read_mask, read_mask_values
from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
from pipeline.loading.loader import iter_samples
from pipeline.sources import get_source
from pipeline.sources.types import SourceError
from pipeline.sources.validate import load_mask
from pipeline.evaluation.davis import read_gt
from pipeline.inference.masks import MaskIOError, read_mask_png

H, W = 24, 32


def _grey() -> np.ndarray:
    a = np.zeros((H, W), np.uint8)
    a[4:15, 6:20] = 255
    return a


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def la_png(grey: np.ndarray) -> bytes:
    """Grey + an all-255 alpha channel, 8 bits each (PNG colour type 4), as the real file."""
    data = _png(Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), mode="LA"))
    assert data[25] == 4 and data[24] == 8  # IHDR colour type 4 (grey + alpha), bit depth 8
    return data


def test_la_reads_as_its_grey_channel_like_l():
    grey = _grey()
    values, mode = read_mask(la_png(grey))
    assert mode == "LA" and values.dtype == np.uint8 and values.shape == (H, W)
    np.testing.assert_array_equal(values, grey)
    np.testing.assert_array_equal(values, read_mask_values(_png(Image.fromarray(grey, "L"))))


def test_every_stage_reads_an_la_annotation_like_its_l_twin(tmp_path):
    grey = _grey()
    (tmp_path / "la.png").write_bytes(la_png(grey))
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    for name in ("la.png", "l.png"):
        p = tmp_path / name
        assert load_mask(p, "binary").objects == (1,)  # sources
        np.testing.assert_array_equal(decode_mask(p.read_bytes(), "binary"), grey // 255)  # loader
        np.testing.assert_array_equal(read_mask_png(p), grey // 255)  # inference
        np.testing.assert_array_equal(read_gt(p, 2016), grey > 0)  # evaluation: not the alpha
    empty = tmp_path / "empty_la.png"
    empty.write_bytes(la_png(np.zeros((H, W), np.uint8)))
    assert load_mask(empty, "binary").objects == ()  # alpha 255 is not foreground
    assert not read_gt(empty, 2016).any()


def test_davis2016_release_with_an_la_annotation_goes_through_shards(tmp_path):
    """A DAVIS-2016 release whose one annotation is LA (as bear/00077.png): preprocessed without
    complaint, the shard keeps its bytes, the loader gives the same labels as for L masks."""
    from pipeline.synthetic import SyntheticSpec, write_dataset

    root = write_dataset("davis2016", tmp_path / "src", SyntheticSpec(n_sequences=1, n_frames=6))
    seq = get_source("davis2016", root).sequences("train")[0]
    modes = {f.frame_id: Image.open(f.mask).mode for f in seq.frames}
    la = [k for k, m in modes.items() if m == "LA"]
    assert len(la) == 1 and set(modes.values()) == {"L", "LA"}  # the writer mirrors the quirk
    (summary,) = run_preprocess(PreprocessConfig("davis2016", root, tmp_path / "lake",
                                                 splits=["train"], progress=False))
    assert summary["failures"] == {} and summary["skipped_files"] == []
    assert summary["samples_this_task"] == len(seq.frames)
    frame = next(f for f in seq.frames if f.frame_id == la[0])
    sample = next(s for s in iter_samples(Path(summary["dir"]), kind="clip")
                  if s["key"] == f"{seq.name}/{frame.index:05d}")
    with Image.open(frame.mask) as im:
        grey = np.array(im)[..., 0]
    np.testing.assert_array_equal(sample["mask"].numpy(), (grey > 0).astype(np.uint8))


@pytest.mark.parametrize("mode", ["1", "P", "I;16"])
def test_other_accepted_modes(mode):
    ids = np.zeros((H, W), np.uint8)
    ids[2:9, 3:11] = 1
    ids[12:20, 14:30] = 2 if mode != "1" else 1
    if mode == "I;16":
        im = Image.fromarray(ids.astype(np.uint16))
        assert im.mode.startswith("I;16")
    else:
        im = Image.fromarray(ids * 255 if mode == "1" else ids, "L").convert(mode)
    if mode == "P":
        im.putpalette([255, 255, 255] * 256)  # indices are read, never colours
    np.testing.assert_array_equal(read_mask_values(_png(im)), ids)


def test_refused_files_say_why(tmp_path):
    cases = {
        "rgb": (_png(Image.fromarray(np.zeros((H, W, 3), np.uint8))), "mode-RGB PNG"),
        "rgba": (_png(Image.fromarray(np.zeros((H, W, 4), np.uint8))), "mode-RGBA PNG"),
        "i16 above 255": (_png(Image.fromarray(np.full((H, W), 300, np.uint16))), "300"),
        "jpeg": (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "JPEG"),
        "garbage": (b"hello", "not a PNG"),
        "empty": (b"", "empty"),
        "truncated": (la_png(_grey())[:60], "corrupt or truncated"),
    }
    for name, (data, words) in cases.items():
        with pytest.raises(MaskFormatError, match=words) as e:
            read_mask_values(data)
        assert e.value.fix, name
    # each stage names the file
    bad = tmp_path / "rgb.png"
    bad.write_bytes(cases["rgb"][0])
    with pytest.raises(SourceError, match=r"rgb\.png: mask is a mode-RGB PNG.*Fix:"):
        load_mask(bad, "binary")
    with pytest.raises(MaskIOError, match=r"rgb\.png: mask is a mode-RGB PNG"):
        read_mask_png(bad)
    with pytest.raises(ValueError, match="mode-RGB"):
        decode_mask(bad.read_bytes(), "binary")
