"""The switches behind the paper's ablations (Tables 3 and 4), with real components:

* ``spatial.attention: false`` ("no attention module"): the mask-guided residuals and their
  weights are gone, the branch still gives its five maps, and a prediction no longer depends on
  the previous scale's;
* ``online.augment: plain`` ("no lucid dream"): the tuning pairs are the first frame itself and
  the ordinary augmentation of it, seeded;
* ``online.segment_at`` (Table 4 along one tuning run): the masks after k steps are those of a
  separate run tuned for exactly k steps (the oracle), k = 0 being the offline weights, and the
  segment job writes, scores and times every k.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.config import ConfigError, load_config, to_dict
from pipeline.inference.segmenter import OnlineSegmenter
from pipeline.inference.tuning import OnlineConfig, dream_pairs
from pipeline.model.config import ModelConfig
from pipeline.model.stcnn import build_discriminator, build_generator, build_ssb
from pipeline.train.optim import OptimConfig
from pipeline.train.weights import save_weights

REPO = Path(__file__).resolve().parents[2]


def model(*overrides: str) -> ModelConfig:
    return load_config(ModelConfig, REPO / "configs" / "model" / "tiny.yaml", list(overrides))


def _scene(h: int = 48, w: int = 64, frames: int = 5, seed: int = 0):
    """A textured background and a moving bright square, its mask on the first frame."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
    out = []
    for t in range(frames):
        f = bg.copy()
        f[10:26, 8 + 2 * t:24 + 2 * t] = (230, 200, 40)
        out.append(f)
    mask = np.zeros((h, w), np.uint8)
    mask[10:26, 8:24] = 1
    mask[0, :] = 255                       # a void border row, as DAVIS-2017 masks have
    return out, mask


def test_no_attention_model_drops_the_mask_guided_residuals():
    torch.manual_seed(0)
    full, plain = build_ssb(model()), build_ssb(model("spatial.attention=false"))
    keys_full, keys_plain = set(full.state_dict()), set(plain.state_dict())
    assert keys_plain < keys_full
    assert {k.split(".")[2] for k in keys_full - keys_plain} == {"attend"}
    frame = torch.randn(2, 3, 48, 64)
    outs = plain.eval()(frame)
    assert len(outs) == 5 and all(o.shape == (2, 2, 48, 64) for o in outs)
    # without attention a module does not read the previous scale's prediction
    module = plain.attention[0]
    skip, ctx = torch.randn(1, module.lateral[0].in_channels, 6, 8), torch.randn(1, 16, 3, 4)
    ctx = torch.randn(1, module.top_down.in_channels, 3, 4)
    a = module(skip, ctx, None, torch.zeros(1, 2, 6, 8))
    b = module(skip, ctx, None, torch.full((1, 2, 6, 8), 5.0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    m = full.attention[0].eval()
    a = m(skip, ctx, None, torch.zeros(1, 2, 6, 8))
    b = m(skip, ctx, None, torch.tensor([-5.0, 5.0]).view(1, 2, 1, 1).expand(1, 2, 6, 8))
    assert not torch.equal(a[1], b[1])    # with attention it does


def test_plain_augmentation_pairs_are_the_frame_and_seeded_augmentations():
    frames, mask = _scene()
    cfg = OnlineConfig(dreams=5, augment="plain")
    images, masks = dream_pairs(frames[0], mask, cfg, seed=3)
    assert images.shape == (5, 48, 64, 3) and masks.shape == (5, 48, 64)
    assert np.array_equal(images[0], frames[0]) and np.array_equal(masks[0], mask)
    assert all(set(np.unique(m)) <= {0, 1, 255} for m in masks)
    assert not np.array_equal(images[1], images[2])
    again = dream_pairs(frames[0], mask, cfg, seed=3)
    assert np.array_equal(again[0], images) and np.array_equal(again[1], masks)
    other = dream_pairs(frames[0], mask, cfg, seed=4)
    assert not np.array_equal(other[0], images)
    lucid = dream_pairs(frames[0], mask, OnlineConfig(dreams=5), seed=3)
    assert not np.array_equal(lucid[0][0], frames[0])        # a dream is not the frame


def test_segment_at_must_name_steps_before_the_last():
    with pytest.raises(ConfigError, match="segment_at"):
        OnlineConfig(iterations=10, segment_at=[10])
    with pytest.raises(ConfigError, match="segment_at"):
        OnlineConfig(iterations=10, segment_at=[2, 2])
    assert OnlineConfig(iterations=10, segment_at=[5, 0]).segment_at == [0, 5]


@pytest.fixture(scope="module")
def weights():
    torch.manual_seed(0)
    cfg = model()
    return cfg, {"G": build_generator(cfg).state_dict(), "SSB": build_ssb(cfg).state_dict()}


def _segmenter(weights, **online) -> OnlineSegmenter:
    cfg, w = weights
    base = dict(iterations=6, dreams=3, optim=OptimConfig(name="adam", lr=1e-2), seed=1)
    return OnlineSegmenter(cfg, w, OnlineConfig(**(base | online)))


def test_masks_after_k_steps_equal_a_run_tuned_for_k_steps(weights):
    frames, mask = _scene()
    along = _segmenter(weights, segment_at=[0, 3]).segment("seq", frames, mask)
    assert sorted(along.at_steps) == [0, 3]
    for k in (0, 3):
        alone = _segmenter(weights, iterations=k).segment("seq", frames, mask)
        assert all(np.array_equal(a, b) for a, b in zip(along.at_steps[k].masks, alone.masks)), k
    final = _segmenter(weights).segment("seq", frames, mask)
    assert all(np.array_equal(a, b) for a, b in zip(along.masks, final.masks))
    # the runs differ from each other (the check above can tell them apart)
    assert not all(np.array_equal(a, b) for a, b in zip(along.at_steps[0].masks, along.masks))
    t = along.timing()["at_steps"]
    assert t["0"]["tune_s"] < t["3"]["tune_s"] < along.tune_seconds
    assert all(v["infer_s"] > 0 for v in t.values())


def test_segment_job_scores_and_times_every_step(tmp_path, weights):
    from pipeline.jobs.segment import SegmentConfig, run_segment
    from pipeline.synthetic import SyntheticSpec, write_dataset
    from pipeline.tracking import TrackingConfig

    root = write_dataset("davis2016", tmp_path / "DAVIS",
                         SyntheticSpec(size=(64, 48), n_sequences=2, n_frames=5, seed=0))
    cfg, w = weights
    ckpt = save_weights(tmp_path / "weights.pt", {"G": build_generator(cfg),
                                                   "D": build_discriminator(cfg),
                                                   "SSB": build_ssb(cfg)},
                        phase="alternating", step=1, model_config=to_dict(cfg))
    out = tmp_path / "seg"
    seg = SegmentConfig(checkpoint=str(ckpt), out=str(out), davis_root=str(root), split="val",
                        print_table=False, overlays=0,
                        online=OnlineConfig(iterations=4, dreams=2, segment_at=[0, 2],
                                            optim=OptimConfig(name="adam", lr=1e-2)),
                        tracking=TrackingConfig(run_name="segment"))
    summary = run_segment(seg)
    assert list(summary["iterations"]) == ["0", "2", "4"]
    assert summary["iterations"]["4"]["metrics"] == summary["evaluation"]["metrics"]
    for k in ("0", "2"):
        it = summary["iterations"][k]
        assert 0.0 <= it["metrics"]["J-Mean"] <= 1.0
        assert (out / "iterations" / k / "eval" / "per-sequence_results-val.csv").is_file()
        assert it["timing"]["total_s_per_frame"] > 0
    seqs = [p.name for p in (out / "iterations" / "0").iterdir() if p.name != "eval"]
    assert sorted(seqs) == sorted(p.name for p in out.iterdir()
                                  if (p / "00000.png").is_file())
    assert summary["iterations"]["0"]["timing"]["tune_s_per_frame"] < \
        summary["iterations"]["2"]["timing"]["tune_s_per_frame"]
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["at_steps"]) == {"0", "2"}
    again = run_segment(seg)                      # resumed: nothing segmented again
    assert again["segmented"] == 0
    assert again["iterations"]["2"]["metrics"] == summary["iterations"]["2"]["metrics"]
