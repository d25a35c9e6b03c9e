"""Several processes, one run: what ranks started by `accelerate launch` (torchrun) share.

Only training is distributed. Every rank composes the same config and must land in the same
run directory, so the start time that `${now:...}` formats is rank 0's (a Hydra callback
agrees on it before the run directory is made). Rank 0 alone builds the data stage, marks
stages done and runs merge, quantize, evaluate and export once training has finished on all
ranks; the others stop after training.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def init_process_group(backend: str | None = None) -> None:
    """Join the ranks torchrun started; accelerate reuses this group for training."""
    import torch
    import torch.distributed as dist

    if not is_distributed() or dist.is_initialized():
        return
    if backend is None:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's value, on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave() -> None:
    """After training: the other stages run on rank 0 alone, without collectives."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def ranks_to_start(distributed_mode: str, processes: int | None) -> int:
    """How many training ranks a run not started by a launcher starts itself (1: none)."""
    if is_distributed() or distributed_mode == "none":
        return 1
    if processes is not None:
        return processes
    import torch

    return max(torch.cuda.device_count(), 1)


def launch_ranks(processes: int, overrides: list[str], config_dir: str | None) -> int:
    """Run `python -m trainer <overrides>` as `processes` ranks under accelerate; their exit code."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", str(processes), "--main_process_port", "0", "-m", "trainer"]
    if config_dir:
        command += ["--config-dir", config_dir]
    log.info("training on %d ranks: %s", processes, " ".join(command + overrides))
    return subprocess.run(command + overrides, check=False).returncode


class SharedRunDir(Callback):
    """Makes `${now:...}` in `hydra.run.dir` format rank 0's start time on every rank.

    Runs before Hydra resolves the run directory. Ranks other than 0 also leave Hydra's
    `.hydra/` config copies to rank 0 and log to their own file in the shared directory.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_distributed():
            return
        backend = OmegaConf.select(config, "hardware.backend")
        init_process_group(backend)
        started = datetime.fromisoformat(broadcast(datetime.now().isoformat()))
        OmegaConf.register_new_resolver(
            "now", lambda pattern: started.strftime(pattern), use_cache=True, replace=True
        )
        if not is_main():
            from omegaconf import open_dict, read_write

            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = None
                file_handler = OmegaConf.select(config, "hydra.job_logging.handlers.file")
                if file_handler is not None and "filename" in file_handler:
                    file_handler.filename = "${hydra:runtime.output_dir}/trainer.rank" + str(rank()) + ".log"
