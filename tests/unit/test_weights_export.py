"""``stcnn-weights export`` (pipeline/cli/weights.py): the files it writes load through the model
configs' ``weights`` keys tensor for tensor; without internet the plain export ends in one
error line naming the fix; bad input is refused before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.cli.weights import main

REPO = Path(__file__).resolve().parents[2]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_equal_tensors(model_state: dict, exported: dict, drop: tuple[str, ...]) -> None:
    kept = {k: v for k, v in exported.items() if not k.startswith(drop)}
    own = {k: v for k, v in model_state.items() if not k.startswith(drop)}
    assert own.keys() == kept.keys()
    for k, v in kept.items():
        assert torch.equal(own[k], v), k


@pytest.mark.slow  # > 5 s: full-depth ResNet-101 (x3) and Inception-v3 on the CPU
def test_random_init_exports_load_into_the_model_tensor_for_tensor(tmp_path, capsys):
    from pipeline.core.config import load_config
    from pipeline.model.backbone import tile_rgb_conv
    from pipeline.model.config import ModelConfig
    from pipeline.model.stcnn import build_discriminator, build_generator, build_ssb

    resnet, inception = tmp_path / "w" / "resnet101.pth", tmp_path / "w" / "inception_v3.pth"
    assert main(["export", "resnet101", "--out", str(resnet), "--random-init"]) == 0
    assert main(["export", "inception_v3", "--out", str(inception), "--random-init", "--seed", "1"]) == 0
    assert "resnet101 (random init (seed 0)) ->" in capsys.readouterr().out
    r, i = _state(resnet), _state(inception)
    assert "fc.weight" in r and "AuxLogits.fc.weight" in i          # torchvision's full key sets

    cfg = load_config(ModelConfig, REPO / "configs" / "model" / "stcnn.yaml", [
        f"temporal.backbone.weights={resnet}", f"spatial.backbone.weights={resnet}",
        f"discriminator.weights={inception}"])
    _assert_equal_tensors(build_ssb(cfg).encoder.state_dict(), r, ("fc.",))
    g = build_generator(cfg).encoder.state_dict()
    assert torch.equal(g.pop("conv1.weight"), tile_rgb_conv(r["conv1.weight"], 3 * cfg.temporal.delta))
    _assert_equal_tensors(g, {k: v for k, v in r.items() if k != "conv1.weight"}, ("fc.",))
    _assert_equal_tensors(build_discriminator(cfg).inception.state_dict(), i, ("fc.", "AuxLogits."))

    again = tmp_path / "copy.pth"                                   # air-gapped: from a file
    assert main(["export", "inception_v3", "--out", str(again), "--from-state-dict", str(inception)]) == 0
    _assert_equal_tensors(_state(again), i, ())
    wrong = tmp_path / "wrong.pth"
    assert main(["export", "resnet101", "--out", str(wrong), "--from-state-dict", str(inception)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"stcnn-weights: error: {inception}: not a torchvision resnet101 state_dict")
    assert "Fix: pass torchvision's resnet101-" in err and "\n" not in err
    assert not wrong.exists()


@pytest.mark.slow  # > 5 s: a child process importing torch and torchvision
def test_without_internet_the_export_fails_in_one_line_naming_the_fix(tmp_path):
    """The download fails at once: torch's hub cache is empty and every request goes through a
    proxy on a closed local port."""
    from support import child_env, closed_port

    proxy = f"http://127.0.0.1:{closed_port()}"
    env = child_env(TORCH_HOME=str(tmp_path / "torch_home"), HTTPS_PROXY=proxy, https_proxy=proxy,
                    HTTP_PROXY=proxy, http_proxy=proxy, NO_PROXY="", no_proxy="")
    out = tmp_path / "resnet101.pth"
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "weights.py"), "export",
                           "resnet101", "--out", str(out), "--timeout", "10"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("stcnn-weights: error: cannot download ResNet101_Weights.IMAGENET1K_V2")
    assert "Fix: no internet here?" in last and "--from-state-dict" in last
    assert not out.exists()


def test_bad_output_and_source_are_refused_before_writing(tmp_path, capsys):
    assert main(["export", "resnet101", "--out", str(tmp_path), "--random-init"]) == 2
    assert f"stcnn-weights: error: --out {tmp_path} is a folder. Fix:" in capsys.readouterr().err
    out = tmp_path / "r.pth"
    assert main(["export", "resnet101", "--out", str(out), "--from-state-dict",
                 str(tmp_path / "missing.pth")]) == 2
    assert "no such file. Fix:" in capsys.readouterr().err
    assert main(["export", "resnet50", "--out", str(out)]) == 2
    assert "invalid choice: 'resnet50'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
