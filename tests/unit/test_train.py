"""Training phases in one process (fast): configs, batch plans, the loop, resume, init_from.

Multi-rank behaviour (torchrun, DDP, DeepSpeed) is in integration/test_train_ddp.py; MLflow in
integration/test_train_mlflow.py. The tiny configs and comparisons are ``support/training.py``'s.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pipeline.core.config import ConfigError, load_config
from pipeline.model.config import ModelConfig
from pipeline.train.config import BatchConfig, load_model_config, load_train_config, plan_batch
from pipeline.train.registry import by_name
from pipeline.train.runner import run_phase

from support.training import (CONFIGS, REPO, assert_same_tensors, last_checkpoint_state,
                              load_state, tiny)


def overrides(lake: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"data.lake={lake}", f"run_dir={run_dir}", "tracking.enabled=false", *extra]


# -- configs ---------------------------------------------------------------------------------

def test_batch_plan():
    assert plan_batch(BatchConfig(size=8), 2).micro_size == 4
    p = plan_batch(BatchConfig(size=8, micro_size=2), 2)
    assert (p.micro_size, p.accum) == (2, 2)
    assert plan_batch(BatchConfig(size=3), 1).accum == 1
    with pytest.raises(ConfigError, match=r"batch.size=3 cannot be split over 2 ranks.*\[1, 3\]"):
        plan_batch(BatchConfig(size=3), 2)
    with pytest.raises(ConfigError, match="micro_size"):
        plan_batch(BatchConfig(size=8, micro_size=3), 2)


def test_paper_configs_hold_the_paper_hyperparameters():
    """Every number of paper Sec. 3.3 / 4.1 is the default of configs/<phase>.yaml."""
    phases = {n: by_name(n).config_class for n in ("gan", "segmentation", "alternating")}
    paper_model = load_config(ModelConfig, CONFIGS / "model" / "stcnn.yaml")

    gan = load_train_config(phases["gan"], CONFIGS / "pretrain_tcb.yaml", [])
    assert gan.batch.size == 3
    assert (gan.gan.optim_g.name, gan.gan.optim_g.lr) == ("adam", 1e-7)
    assert (gan.gan.optim_d.name, gan.gan.optim_d.lr) == ("adam", 1e-4)
    assert gan.loss.lambda_adv == 0.001
    from pipeline.loading.augment import get_preset, resolve_augment
    assert gan.data.augment == get_preset("tcb_pretrain")
    assert gan.data.augment.preset == "tcb_pretrain"
    aug = resolve_augment(gan.data.augment)
    assert aug.size == (480, 854) and aug.hflip == 0.5 and aug.rotate_deg == 0
    assert set(gan.data.sets) == {"ilsvrc_vid/train", "ilsvrc_vid/val"}

    ssb = load_train_config(phases["segmentation"], CONFIGS / "pretrain_ssb.yaml", [])
    assert ssb.batch.size == 8
    o = ssb.segmentation.optim
    assert (o.name, o.lr) == ("sgd", 1e-3)
    aug = resolve_augment(ssb.data.augment)
    assert aug.size == (300, 300) and aug.hflip > 0 and aug.rotate_deg > 0
    assert set(ssb.data.sets) == {"msra10k/train", "voc2012/train"}
    assert ssb.loss.side_weight_schedule == "constant"   # losses of all scales added

    off = load_train_config(phases["alternating"], CONFIGS / "train_offline.yaml", [])
    a = off.alternating
    assert off.batch.size == 1
    assert (a.optim_g.name, a.optim_g.lr, a.optim_d.name, a.optim_d.lr) == ("adam", 1e-8, "adam", 1e-4)
    assert (a.optim_ssb.name, a.optim_ssb.lr) == ("sgd", 1e-4)
    assert a.schedule == "rounds" and off.loss.lambda_adv == 0.001
    aug = resolve_augment(off.data.augment)
    assert aug.hflip > 0 and aug.rotate_deg > 0 and aug.scale[0] < 1 < aug.scale[1]
    assert off.data.sets == ["davis2016/train"]

    for cfg in (gan, ssb, off):
        model = load_model_config(cfg)
        assert model == paper_model                      # the paper's architecture
        assert model.temporal.delta == 4
        assert model.temporal.backbone.blocks == [3, 4, 23, 3]   # ResNet-101
        assert model.spatial.backbone.blocks == [3, 4, 23, 3]
    # and it builds: parameter counts of the paper model (meta device: no memory, no time)
    from pipeline.model.stcnn import build_discriminator, build_stcnn
    with torch.device("meta"):
        net, d = build_stcnn(paper_model), build_discriminator(paper_model)
    n_tcb = sum(p.numel() for p in net.tcb.parameters())
    n_ssb = sum(p.numel() for p in net.ssb.parameters())
    assert 50e6 < n_tcb < 70e6 and 60e6 < n_ssb < 80e6          # ResNet-101 trunks + decoders
    assert 20e6 < sum(p.numel() for p in d.parameters()) < 30e6  # Inception-v3


def test_config_errors_name_the_problem(train_lake, tmp_path):
    with pytest.raises(ConfigError, match="gan.lamda_adv"):
        load_train_config(by_name("gan").config_class, tiny("gan"), ["gan.lamda_adv=1"])
    with pytest.raises(ConfigError, match="nope/train.*do not exist"):
        run_phase("gan", tiny("gan"), overrides(train_lake, tmp_path / "r", "data.sets=[nope/train]"))
    with pytest.raises(ConfigError, match="has no weights for G, D, SSB"):
        run_phase("alternating", tiny("alternating"),
                  overrides(train_lake, tmp_path / "r2", "init_missing=error"))


@pytest.mark.parametrize("override, needles", [
    ("data.augment.hflpi=0.5", ["data.augment", "['hflpi']", "valid keys", "'hflip'", "'preset'"]),
    ("data.augment.hflip=often", ["data.augment.hflip", "expected a number"]),
    ("eval.augment.size=[1,2,3]", ["eval.augment.size", "tuple[int, int]"]),
    ("data.augment.hflip=2", ["data.augment", "hflip", "[0, 1]"]),
    ("data.augment.preset=offlien", ["data.augment.preset", "'offlien'", "'offline'"]),
    ("model_overrides=[spatial.num_clases=1]",
     ["model_overrides", "['num_clases']", "valid keys", "'num_classes'"]),
    ("model_overrides=[temporal.delta=four]", ["model_overrides", "temporal.delta", "integer"]),
])
def test_augment_and_model_overrides_are_checked_at_load(override, needles):
    with pytest.raises(ConfigError) as e:
        load_train_config(by_name("segmentation").config_class, tiny("segmentation"), [override])
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_augment_values_keep_their_meaning():
    """A preset and the keys it changes, a whole mapping, one number for a pair; the resolved
    section reloads as the same config."""
    from pipeline.core.config import from_dict, to_dict
    from pipeline.loading.augment import AugmentConfig, get_preset, resolve_augment

    cls = by_name("segmentation").config_class
    cfg = load_train_config(cls, tiny("segmentation"), ["data.augment.size=40",
                                                       "data.augment.scale=1.5"])
    assert cfg.data.augment == get_preset("ssb_pretrain", size=(40, 40), scale=(1.5, 1.5))
    assert cfg.data.augment.preset == "ssb_pretrain" and cfg.eval.augment == get_preset("eval")
    whole = load_train_config(cls, tiny("segmentation"), ["data.augment={size: [48, 64]}"])
    assert whole.data.augment == AugmentConfig(size=(48, 64)) and whole.data.augment.preset is None
    assert from_dict(cls, to_dict(cfg)).data.augment == cfg.data.augment
    assert resolve_augment({"preset": "offline", "size": None}) == get_preset("offline", size=None)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['flip'\]; valid keys"):
        resolve_augment({"flip": 0.5})


def test_loss_weights_are_the_loss_section(train_lake, tmp_path):
    """lambda_adv, the side weights and seg_weight_g are ``loss:`` keys only; the GAN phase's
    generator loss is mse + loss.lambda_adv x adversarial."""
    for phase, section in (("gan", "gan"), ("alternating", "alternating"),
                           ("segmentation", "segmentation")):
        for key in ("lambda_adv", "side_weight_schedule", "seg_weight_g"):
            with pytest.raises(ConfigError, match=rf"{section}: unknown key\(s\) \['{key}'\]"):
                load_train_config(by_name(phase).config_class, tiny(phase), [f"{section}.{key}=1"])
    s = run_phase("gan", tiny("gan"), overrides(train_lake, tmp_path / "g", "steps=1",
                                                "loss.lambda_adv=1000"))
    m = s["last_metrics"]
    assert m["G/loss"] == pytest.approx(m["G/mse"] + 1000 * m["G/adv"], rel=1e-4)


# -- phases run and resume -------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["gan", "segmentation", "alternating"])
def test_tiny_phase_runs_and_exports(phase, train_lake, tmp_path):
    run_dir = tmp_path / phase
    s = run_phase(phase, tiny(phase), overrides(train_lake, run_dir, "steps=3"))
    assert s["completed"] and s["steps"] == 3
    w = load_state(run_dir)
    expected = {"gan": {"G", "D"}, "segmentation": {"SSB"}, "alternating": {"G", "D", "SSB"}}
    assert set(w["models"]) == expected[phase] and w["phase"] == phase and w["step"] == 3
    assert all(math.isfinite(v) for v in s["last_metrics"].values())
    assert s["samples_per_s"] > 0
    assert (run_dir / "config.yaml").is_file() and (run_dir / "summary.json").is_file()
    assert [p.name for p in sorted((run_dir / "checkpoints").glob("step_*"))] == \
        ["step_00000002", "step_00000003"]          # every 2 steps + the end, keep_last 2


GPU_OPTIONS = ("dist.precision=bf16", "dist.channels_last=true")


@pytest.mark.parametrize("phase", ["gan", "segmentation", "alternating"])
def test_bf16_and_channels_last_run_and_resume_on_the_cpu(phase, train_lake, tmp_path):
    """The GPU options (bf16 autocast, NHWC) through the same code on the CPU: the run computes
    other losses than fp32 (autocast is on), exports fp32 weights under the same names, and
    resumes bit-identically; a probe on every convolution sees NHWC bf16 computations.
    (torch.compile works on the CPU too, but compiling the tiny GAN
    takes ~4.5 min here: checked by hand, not in CI.)"""
    import conv_probe_hook

    probe = "hooks=[conv_probe_hook:probe]"
    fp32 = run_phase(phase, tiny(phase), overrides(train_lake, tmp_path / "fp32", "steps=3",
                                                   probe))
    plain = list(conv_probe_hook.CALLS)
    full = run_phase(phase, tiny(phase), overrides(train_lake, tmp_path / "full", "steps=3",
                                                   *GPU_OPTIONS, probe))
    # the convolutions really ran on NHWC inputs (all but the first conv of a branch, fed by
    # the NCHW batch) and in bf16; the fp32 run's neither
    probed = conv_probe_hook.CALLS
    nhwc = sum(c["channels_last"] for c in probed)
    assert probed and nhwc >= 0.9 * len(probed), f"{nhwc} of {len(probed)} conv inputs NHWC"
    assert all(c["output_dtype"] == torch.bfloat16 for c in probed)
    # (fp32 without the option: D's real frames arrive NHWC from the loader's HWC decode and
    # its convolutions keep that layout; G's and the SSB's are NCHW)
    assert plain and not any(c["channels_last"] for c in plain if c["engine"] != "D")
    assert all(c["output_dtype"] == torch.float32 for c in plain)
    assert full["completed"] and all(math.isfinite(v) for v in full["last_metrics"].values())
    losses = {k: v for k, v in full["loss_history"].items() if k != "steps"}
    assert full["loss_history"]["steps"] == fp32["loss_history"]["steps"] == [1, 2, 3]
    assert set(losses) == set(fp32["loss_history"]) - {"steps"} and losses
    assert all(math.isfinite(v) for vs in losses.values() for v in vs)
    assert losses != {k: fp32["loss_history"][k] for k in losses}     # autocast changed them
    a, b = load_state(tmp_path / "fp32")["models"], load_state(tmp_path / "full")["models"]
    assert {k: list(v) for k, v in a.items()} == {k: list(v) for k, v in b.items()}
    assert all(t.dtype == a[m][k].dtype for m in b for k, t in b[m].items())
    parts = tmp_path / "parts"
    first = run_phase(phase, tiny(phase), overrides(train_lake, parts, "steps=3", *GPU_OPTIONS,
                                                    "checkpoint.stop_after=2"))
    s = run_phase(phase, tiny(phase), overrides(train_lake, parts, "steps=3", *GPU_OPTIONS))
    assert s["start_step"] == 2 and s["completed"]
    # the losses of steps 1-2 (first invocation) and 3 (resumed) are the uninterrupted run's
    assert first["loss_history"]["steps"] == [1, 2] and s["loss_history"]["steps"] == [3]
    assert {k: first["loss_history"].get(k, []) + s["loss_history"].get(k, []) for k in losses} \
        == losses                       # (alternating: each round logs its own branch's losses)
    assert_same_tensors(load_state(tmp_path / "full")["models"], load_state(parts)["models"],
                        "weights")


@pytest.mark.parametrize("phase", ["gan", "alternating"])
def test_resume_is_bit_identical(phase, train_lake, tmp_path):
    """Stopped after 2 steps and resumed == uninterrupted, for weights and optimizer state
    (alternating: the stop falls at the TCB->SSB switch; 5 steps cross an epoch of 3 batches)."""
    full, parts = tmp_path / "full", tmp_path / "parts"
    run_phase(phase, tiny(phase), overrides(train_lake, full, "steps=5"))
    s1 = run_phase(phase, tiny(phase), overrides(train_lake, parts, "steps=5",
                                                 "checkpoint.stop_after=2"))
    assert not s1["completed"] and s1["steps"] == 2 and not (parts / "weights.pt").exists()
    s2 = run_phase(phase, tiny(phase), overrides(train_lake, parts, "steps=5"))
    assert s2["start_step"] == 2 and s2["completed"] and s2["resumed_from"].endswith("step_00000002")
    assert_same_tensors(load_state(full)["models"], load_state(parts)["models"], "weights")
    a, b = last_checkpoint_state(full), last_checkpoint_state(parts)
    assert_same_tensors(a["engines"], b["engines"], "engines")    # models, optimizers, schedulers
    assert a["step"] == b["step"] == 5


def test_gradient_accumulation_matches_a_full_batch(train_lake, tmp_path):
    """batch.size=4 as 2 micro-batches of 2 == one forward of 4 (frozen-BN SSB: per-sample;
    MSRA10K without rotation: no void pixels, so every micro-batch mean has the same weight)."""
    same = ["steps=2", "batch.size=4", "data.sets=[msra10k/train]", "data.augment.rotate_deg=0",
            "data.epoch_batches=8"]  # one epoch: the same samples in the same order
    one = run_phase("segmentation", tiny("segmentation"),
                    overrides(train_lake, tmp_path / "one", *same))
    two = run_phase("segmentation", tiny("segmentation"),
                    overrides(train_lake, tmp_path / "two", *same, "batch.micro_size=2"))
    assert (one["accum"], two["accum"]) == (1, 2)
    a, b = load_state(tmp_path / "one")["models"]["SSB"], load_state(tmp_path / "two")["models"]["SSB"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5), k


def test_init_from_chains_phases(train_lake, tmp_path):
    """Offline training starts from the GAN phase's G/D and the SSB phase's SSB."""
    run_phase("gan", tiny("gan"), overrides(train_lake, tmp_path / "tcb", "steps=1"))
    run_phase("segmentation", tiny("segmentation"), overrides(train_lake, tmp_path / "ssb", "steps=1"))
    tcb_w, ssb_w = tmp_path / "tcb" / "weights.pt", tmp_path / "ssb" / "weights.pt"
    s = run_phase("alternating", tiny("alternating"),
                  overrides(train_lake, tmp_path / "off", "steps=1", "init_missing=error",
                            f"init_from=[{tcb_w},{ssb_w}]", "checkpoint.every=1"))
    assert s["completed"]
    # step 1 is a TCB round: the SSB is untouched, so it still equals the SSB phase's weights
    off = load_state(tmp_path / "off")["models"]
    assert_same_tensors(off["SSB"], load_state(tmp_path / "ssb")["models"]["SSB"], "SSB")
    # a weights file that is not one
    bad = tmp_path / "bad.pt"
    torch.save({"hello": torch.zeros(1)}, bad)
    from pipeline.train.weights import WeightsError
    with pytest.raises(WeightsError, match="not an STCNN weights file"):
        run_phase("segmentation", tiny("segmentation"),
                  overrides(train_lake, tmp_path / "x", "steps=1", f"init_from={bad}"))
    with pytest.raises(Exception, match="missing.pt"):
        run_phase("segmentation", tiny("segmentation"),
                  overrides(train_lake, tmp_path / "y", "steps=1", f"init_from={tmp_path}/missing.pt"))


@pytest.mark.slow
def test_eval_hook_reports_j(train_lake, tmp_path):
    """The eval hook's ``eval/J`` is the mean over the eval samples of the official J
    (``pipeline.evaluation.metrics.jaccard``, void 255 left out) of the trained model's
    predictions, recomputed here from the exported weights on the run's eval batches."""
    import numpy as np

    from pipeline.core.dist import init_distributed
    from pipeline.evaluation.metrics import jaccard
    from pipeline.train.runner import build_eval_batches

    run_dir = tmp_path / "ev"
    args = overrides(train_lake, run_dir, "steps=2", "eval.every=2", "eval.batches=2")
    s = run_phase("alternating", tiny("alternating"), args)
    j = s["last_metrics"]["eval/J"]

    phase_cls, cfg_cls = by_name("alternating").phase_class, by_name("alternating").config_class
    cfg = load_train_config(cfg_cls, tiny("alternating"), args)
    ctx = init_distributed(cfg.dist)                       # one process: no process group
    phase = phase_cls(cfg, load_model_config(cfg), ctx, plan_batch(cfg.batch, 1), init={})
    weights = load_state(run_dir)["models"]
    for name, module in phase.modules().items():
        module.load_state_dict(weights[name])
        module.eval()
    per_sample = []

    class Recompute:  # the run's eval batches (build_eval_batches), scored here
        plan, kind = phase.plan, phase.kind

        @staticmethod
        @torch.no_grad()
        def evaluate(batches):
            for batch in batches:
                micro = phase.prepare(batch)
                pred = phase.predict_foreground(micro).cpu().numpy()
                gt = micro["mask"].cpu().numpy()
                per_sample.extend(jaccard(g == 1, p, void=g == 255) for g, p in zip(gt, pred))
            return {}

    build_eval_batches(cfg, Recompute, ctx)()
    assert len(per_sample) == 2 * phase.plan.micro_size
    assert j == pytest.approx(float(np.mean(per_sample)), abs=1e-12), per_sample


def test_loop_stops_on_a_non_finite_loss(train_lake, tmp_path):
    from pipeline.train.loop import NonFiniteLossError
    with pytest.raises(NonFiniteLossError, match=r"SSB loss is (nan|inf|-inf) at step [23]"):
        run_phase("segmentation", tiny("segmentation"),
                  overrides(train_lake, tmp_path / "nan", "steps=2",
                            "segmentation.optim.lr=1e30", "segmentation.optim.schedule=constant",
                            "steps=3"))


@pytest.fixture(scope="module")
def ffcv_beton(train_lake, tmp_path_factory) -> Path:
    """The image sets of the training lake as an FFCV store, written by launch/ffcv_store.py."""
    pytest.importorskip("ffcv")
    import subprocess
    import sys
    beton = tmp_path_factory.mktemp("ffcv") / "ssb.beton"
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "ffcv_store.py"), "--lake",
                           str(train_lake), "--sets", "msra10k/train", "voc2012/train", "--out",
                           str(beton)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return beton


@pytest.mark.slow  # > 5 s on 2 cores: keeps -m "not slow" under 3 min
@pytest.mark.ffcv
def test_ssb_pretraining_reads_an_ffcv_store(train_lake, ffcv_beton, tmp_path):
    beton = ffcv_beton
    s = run_phase("segmentation", tiny("segmentation"),
                  overrides(train_lake, tmp_path / "ffcv", "steps=3", "data.backend=ffcv",
                            f"data.ffcv_store={beton}", "data.num_workers=1"))
    assert s["completed"] and math.isfinite(s["last_metrics"]["SSB/loss"])
    assert set(load_state(tmp_path / "ffcv")["models"]) == {"SSB"}


def test_resume_with_loader_workers_is_bit_identical(train_lake, tmp_path):
    """Two DataLoader worker processes (each reading its own shards with its own seed): the
    resumed run still sees exactly the batches of the uninterrupted one."""
    import multiprocessing

    workers = ("data.num_workers=2", "steps=5")
    full, parts = tmp_path / "full", tmp_path / "parts"
    run_phase("gan", tiny("gan"), overrides(train_lake, full, *workers))
    # each run shuts its loader workers down as it ends (not when the garbage collector gets to
    # the iterator, in some later run: 5 s of join timeout per worker)
    assert multiprocessing.active_children() == []
    run_phase("gan", tiny("gan"), overrides(train_lake, parts, *workers, "checkpoint.stop_after=2"))
    assert multiprocessing.active_children() == []
    s = run_phase("gan", tiny("gan"), overrides(train_lake, parts, *workers))
    assert multiprocessing.active_children() == []
    assert s["start_step"] == 2 and s["completed"]
    assert_same_tensors(load_state(full)["models"], load_state(parts)["models"], "weights")


@pytest.mark.slow  # > 5 s: keeps `-m "not slow"` under 3 min
@pytest.mark.ffcv
def test_ffcv_backend_resume_is_bit_identical(train_lake, ffcv_beton, tmp_path):
    """SSB pretraining on an FFCV store, stopped after 3 steps and resumed == uninterrupted (the
    run crosses FFCV epochs: data.epoch_batches=2, so the resumed epoch is not epoch 0)."""
    ffcv = ("data.backend=ffcv", f"data.ffcv_store={ffcv_beton}", "data.num_workers=1",
            "data.epoch_batches=2", "steps=5")
    full, parts = tmp_path / "full", tmp_path / "parts"
    run_phase("segmentation", tiny("segmentation"), overrides(train_lake, full, *ffcv))
    run_phase("segmentation", tiny("segmentation"),
              overrides(train_lake, parts, *ffcv, "checkpoint.stop_after=3"))
    s = run_phase("segmentation", tiny("segmentation"), overrides(train_lake, parts, *ffcv))
    assert s["start_step"] == 3 and s["completed"]
    assert_same_tensors(load_state(full)["models"], load_state(parts)["models"], "weights")


def test_resume_falls_back_past_a_truncated_checkpoint(train_lake, tmp_path, caplog):
    run_dir = tmp_path / "seg"
    run_phase("segmentation", tiny("segmentation"), overrides(train_lake, run_dir, "steps=4"))
    newest = run_dir / "checkpoints" / "step_00000004" / "shared.pt"
    newest.write_bytes(newest.read_bytes()[:100])            # truncated: e.g. a full disk
    s = run_phase("segmentation", tiny("segmentation"), overrides(train_lake, run_dir, "steps=5"))
    err = caplog.text
    assert "step_00000004 cannot be resumed from" in err and "trying the previous one" in err
    assert s["start_step"] == 2 and s["completed"] and s["resumed_from"].endswith("step_00000002")


def test_random_full_depth_backbones_are_warned_about(caplog):
    from pipeline.core.config import load_config
    from pipeline.model.config import ModelConfig
    from pipeline.train.weights import warn_random_backbones

    paper = load_config(ModelConfig, CONFIGS / "model" / "stcnn.yaml")
    tiny_model = load_config(ModelConfig, CONFIGS / "model" / "tiny.yaml")
    with caplog.at_level("WARNING", logger="pipeline.train.weights"):
        assert warn_random_backbones(paper, ["temporal", "spatial"]) == [
            "model.temporal.backbone.weights", "model.spatial.backbone.weights"]
    assert "random ResNet-101" in caplog.text and "resnet101 state_dict" in caplog.text
    assert warn_random_backbones(tiny_model, ["temporal", "spatial"]) == []   # 1 block per stage
    assert warn_random_backbones(paper, ["spatial"], init={"SSB": {}}) == []  # init_from gives it
    with_weights = load_config(ModelConfig, CONFIGS / "model" / "stcnn.yaml",
                               ["spatial.backbone.weights=/data/resnet101.pth"])
    assert warn_random_backbones(with_weights, ["spatial"]) == []


def test_gan_phase_with_jpegs_decoded_by_the_trainer_matches_worker_decoding(train_lake, tmp_path):
    """``data.decode_device`` (here ``cpu``: the CUDA path's code on this machine): the TCB
    pretraining phase trains on batches the trainer decoded from JPEG bytes, and ends with the
    same weights as with worker decoding (same pixels, same flips)."""
    a = run_phase("gan", tiny("gan"), overrides(train_lake, tmp_path / "workers", "steps=3"))
    b = run_phase("gan", tiny("gan"), overrides(train_lake, tmp_path / "device", "steps=3",
                                                 "data.decode_device=cpu"))
    assert a["completed"] and b["completed"]
    assert_same_tensors(load_state(tmp_path / "workers")["models"],
                        load_state(tmp_path / "device")["models"], "decode_device")
