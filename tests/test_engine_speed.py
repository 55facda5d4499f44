"""Training-speed settings that must not change what is learned, and the CPU defaults behind them."""

from __future__ import annotations

import math
import platform
import resource

import numpy as np
import pytest
import torch
from torch import nn

from odkit.engine import data as data_utils
from odkit.engine import runtime, speed
from odkit.models import build


def _grads(model: nn.Module, x: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(x, targets)["loss"].backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_out_of_place_activations_give_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = build("yolox-nano", num_classes=2).train()
    x = torch.rand(2, 3, 128, 128)
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[30.0, 5.0, 90.0, 40.0], [70.0, 70.0, 120.0, 126.0]]),
                "labels": torch.tensor([0, 1])}]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ref = _grads(model, x, targets)
    model.load_state_dict(state)  # BatchNorm running stats back to where they were
    n = speed.out_of_place_activations(model)
    assert n > 0 and not any(getattr(m, "inplace", False) for m in model.modules() if isinstance(m, nn.SiLU))
    got = _grads(model, x, targets)
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_foreach_optimizer_sets_the_multi_tensor_update() -> None:
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    speed.foreach_optimizer(opt)
    assert opt.param_groups[0]["foreach"] is True


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_stops_page_faults_on_reused_blocks() -> None:
    def faults_for(n: int) -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(n):
            t = torch.empty(16 << 20, dtype=torch.uint8)  # 16 MiB: mmap'd by default
            t.fill_(1)
            del t
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    assert runtime.keep_freed_memory()
    faults_for(2)  # the first block is faulted in once
    pages = (16 << 20) // resource.getpagesize()
    # without the setting every block faults in all of its pages (8 * pages); the counter is the
    # whole process's, so the quietest of three tries is compared
    assert min(faults_for(8) for _ in range(3)) < pages


def test_default_workers_on_cpu_and_cuda() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runtime.default_workers(cpu, cores=1) == 0
    assert runtime.default_workers(cpu, cores=2) == 0
    assert runtime.default_workers(cpu, cores=8) == 2
    assert runtime.default_workers(cpu, cores=64) == 4
    assert runtime.default_workers(cpu, processes=4, cores=8) == 0
    assert runtime.default_workers(cuda, cores=4) == 3
    assert runtime.default_workers(cuda, cores=32) == 8


def test_auto_cache_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.multiprocessing as mp

    monkeypatch.setattr(data_utils, "available_memory_gb", lambda: 8.0)
    monkeypatch.setattr(mp, "get_start_method", lambda allow_none=False: "fork")
    assert data_utils.auto_cache_gb(workers=0) == pytest.approx(2.0)  # a quarter of 8 GB
    assert data_utils.auto_cache_gb(workers=2, processes=2) == pytest.approx(1.0)
    monkeypatch.setattr(data_utils, "available_memory_gb", lambda: 64.0)
    assert data_utils.auto_cache_gb(workers=0) == pytest.approx(data_utils.AUTO_CACHE_GB)
    monkeypatch.setattr(mp, "get_start_method", lambda allow_none=False: "spawn")
    assert data_utils.auto_cache_gb(workers=2) == 0.0  # each worker would hold its own copy
    assert data_utils.auto_cache_gb(workers=0) == pytest.approx(data_utils.AUTO_CACHE_GB)
    monkeypatch.setattr(data_utils, "available_memory_gb", lambda: None)
    assert data_utils.auto_cache_gb(workers=0) == 0.0


def test_available_memory_is_known_here() -> None:
    gb = data_utils.available_memory_gb()
    assert gb is None or gb > 0


def test_ema_update_equals_the_per_tensor_loop_bit_for_bit() -> None:
    from odkit.engine.ema import ModelEMA

    torch.manual_seed(0)
    model = build("yolox-nano", num_classes=2)
    ema = ModelEMA(model, decay=0.999, tau=50.0)
    ref = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        for buf in model.buffers():
            if not buf.dtype.is_floating_point:
                buf.add_(1)  # integer buffers are copied
        ema.update(model)
        d = ema.decay * (1 - math.exp(-ema.updates / ema.tau))  # the decay of that update
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ref[k].mul_(d).add_(v, alpha=1.0 - d)
            else:
                ref[k].copy_(v)
    for k, v in ema.ema.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_checkpoint_saver_writes_the_state_as_it_was_at_submit(tmp_path) -> None:
    from odkit.engine.checkpoint import CheckpointSaver, load_checkpoint

    w = torch.arange(6.0)
    saver = CheckpointSaver()
    saver.submit(tmp_path / "c.pt", {"model": {"w": w}, "epoch": 1, "opt": [w, (w, 2)]})
    w.add_(100)  # training goes on while the file is written
    saver.wait()
    state = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(state["model"]["w"], torch.arange(6.0)) and state["epoch"] == 1
    assert torch.equal(state["opt"][1][0], torch.arange(6.0)) and state["opt"][1][1] == 2


def test_checkpoint_saver_hands_errors_to_the_caller(tmp_path) -> None:
    from odkit.engine.checkpoint import CheckpointSaver

    (tmp_path / "file").write_text("x")
    saver = CheckpointSaver()
    saver.submit(tmp_path / "file" / "c.pt", {"model": {}, "epoch": 1})  # parent is a file
    with pytest.raises(OSError):
        saver.wait()
    saver.wait()  # the error is raised once


def test_channels_last_collate_gives_the_same_values() -> None:
    from odkit.data.loader import collate_detection

    rng = np.random.default_rng(0)
    batch = [(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), np.array([[1, 2, 8, 9]], np.float32),
              np.array([1]), {"i": i}) for i in range(3)]
    plain, t1, _ = collate_detection(batch)
    cl, t2, _ = collate_detection(batch, channels_last=True)
    assert plain.is_contiguous() and cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, cl) and plain.dtype == cl.dtype == torch.float32
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(t1, t2))
    # each value is the pixel / 255
    assert torch.equal(cl[1, 2, 5, 7], torch.tensor(float(batch[1][0][5, 7, 2]) / 255.0))


@pytest.mark.parametrize("mean", [(0.0, 0.0, 0.0), (0.485, 0.456, 0.406)])
def test_input_normalisation_equals_the_formula_bit_for_bit(mean) -> None:
    model = build("yolox-nano", num_classes=2)
    std = (1 / 255, 0.224, 0.225)
    model.set_input_format(mean, std, input_bgr=True)
    x = torch.rand(2, 3, 32, 32)
    x[0, :, 0, 0] = torch.tensor([-0.0, 0.0, 1.0])
    ref = (x.flip(1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    got = model.normalize(x)
    assert torch.equal(got, ref) and torch.equal(torch.signbit(got), torch.signbit(ref))
