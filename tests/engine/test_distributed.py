"""Training under torchrun (DDP, Gloo on CPU, 2 processes) on a tiny phantom."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tcsa_uda.engine.checkpoint import load_checkpoint


def _free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it), so parallel runs never collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "tcsa_uda",
        "train",
        "configs/phantom_mr2ct.yaml",
        *tiny_overrides,
        "model.disc_width=8",
        "num_threads=1",
        "stages=[{method: adaoutput, iterations: 2}, {method: tcsa, iterations: 2, options: {align_start: 1}}]",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # check_in_sync raises on any rank whose model or discriminators diverged; rank 0 wrote these:
    ck = load_checkpoint(out / "final.pt")
    assert ck["method"] == "tcsa"
    assert (out / "stage1_adaoutput" / "metrics.jsonl").is_file()
