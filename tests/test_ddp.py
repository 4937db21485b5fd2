"""The training CLI under torchrun: two processes, the gloo backend, on the CPU.

Each process draws the same global batch and trains on its half; DistributedDataParallel averages
the gradients. So two ranks must end where one process ends when it averages the losses of the
two halves (each half through the model on its own, as each rank's BatchNorm sees only its half).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import assert_close, require_demo_packages
from tritonprop import ops
from tritonprop.models import cnn, train
from test_data_mnist import write_real_digits_dir

require_demo_packages()

STEPS, BATCH, SEED = 2, 8, 3
MODEL = ["--widths", "4,8", "--strides", "2,2"]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    data_dir = write_real_digits_dir(tmp_path_factory.mktemp("digits"))
    out = tmp_path_factory.mktemp("ddp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tritonprop", "train", "cnn", "--device", "cpu", "--steps", str(STEPS),
               "--batch-size", str(BATCH), "--seed", str(SEED), "--data", str(data_dir), "--out", str(out), *MODEL]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    return result, out, data_dir


def test_torchrun_two_processes(two_rank_run):
    result, out, _ = two_rank_run
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == STEPS
    assert all(math.isfinite(loss) for loss in metrics["losses"])
    # Only rank 0 reports.
    assert result.stdout.count("cnn: 2 steps") == 1


def test_two_ranks_match_one_process_on_the_whole_batch(two_rank_run):
    result, out, data_dir = two_rank_run
    assert result.returncode == 0, result.stderr[-3000:]
    train.seed_everything(SEED)
    data = cnn.load_data(data_dir, SEED, None)
    train.seed_everything(SEED)
    model = cnn.CNN(data.image_size, 10, (4, 8), (2, 2), ops)
    optimizer = torch.optim.Adam(model.parameters(), lr=cnn.TASK.default_lr)
    batches = cnn.batches(data, BATCH, torch.Generator().manual_seed(SEED))
    losses = []
    for _ in range(STEPS):
        images, labels = next(batches)
        halves = [cnn.loss(model, (images[i: i + BATCH // 2], labels[i: i + BATCH // 2]), ops)
                  for i in (0, BATCH // 2)]
        loss = (halves[0] + halves[1]) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["losses"] == pytest.approx(losses, rel=1e-5)
    trained = torch.load(out / train.CHECKPOINT, weights_only=False)["model"]
    for name, parameter in model.named_parameters():
        assert_close(trained[name], parameter.detach(), name=name)
