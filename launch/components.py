"""torchx components for recsys-dist: one `train` job of nnodes x nproc_per_node ranks through torchrun.

    torchx run -s local_cwd launch/components.py:train -j 1x2 --config configs/dlrm_synthetic.yaml
    torchx run -s local_cwd launch/components.py:train -j 2x1 --config configs/dlrm_synthetic.yaml -- train.max_steps=100
    torchx run -s kubernetes -cfg queue=default,namespace=ml launch/components.py:train -j 4x8 --gpu 8 \
        --image registry.example.com/recsys-dist:cuda --config configs/dlrm_criteo_terabyte.yaml \
        --mounts type=volume,src=ckpt-pvc,dst=/runs -- train.out_dir=/runs/dlrm_tb

The AppDef comes from torchx's own `dist.ddp` (torchrun with c10d rendezvous on the first replica's host, one
role of nnodes replicas); this adds the project's entry point, defaults and checks: the config is checked while
the AppDef is built (recsys_dist/submit_check.py, `--check`), so a bad override stops `torchx run` with one line
and exit 2 before anything is submitted. The same component serves CPU and GPU jobs: the trainer picks cuda +
nccl when it sees a GPU, cpu + gloo otherwise (train.device=auto).
Fault tolerance, the same on every scheduler: --max_retries K becomes torchrun's --max-restarts K, so when a rank
dies the job's own torchrun agents restart every worker (local_cwd too, which has no retries of its own), and
the workers resume from the newest complete checkpoint in train.out_dir (train.resume=auto). Schedulers that
retry (kubernetes, aws_batch, ...) also get max_retries on the role, for a lost node (agent and all); that re-run
resumes the same way. out_dir must be on storage all nodes share.
"""

import os
import sys
from typing import Dict, List, NoReturn, Optional

import torchx.specs as specs
from torchx.components.dist import ddp, parse_nnodes

from recsys_dist.config import ConfigError
from recsys_dist.submit_check import check_train_job


def train(
    *overrides: str,
    config: str = "configs/dlrm_synthetic.yaml",
    j: str = "1x2",
    image: str = "recsys-dist:cpu",
    name: str = "recsys-dist/train",
    h: Optional[str] = None,
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    env: Optional[Dict[str, str]] = None,
    mounts: Optional[List[str]] = None,
    max_retries: int = 3,
    rdzv_port: int = 29500,
    rdzv_backend: str = "c10d",
    check: str = "auto",
) -> specs.AppDef:
    """Trains a CTR model (`recsys-dist train`) on nnodes x nproc_per_node ranks with torchrun.

    Args:
        overrides: config overrides `section.key=value` (after `--`), e.g. train.max_steps=100 data.dir=/data
        config: the YAML config (a preset from configs/), a path inside the image / working directory
        j: {nnodes}x{nproc_per_node} (or {min_nnodes}:{max_nnodes}x{nproc_per_node}); on GPU hosts
            nproc_per_node must not exceed --gpu
        image: container image (docker/Dockerfile; ignored by local_cwd, which runs in the current directory)
        name: job name, {experiment}/{run}
        h: a registered named resource (takes precedence over cpu, gpu, memMB)
        cpu: CPUs per node
        gpu: GPUs per node (0: a CPU job with gloo; > 0: nccl, one GPU per rank)
        memMB: memory per node in MB
        env: environment variables for every rank, e.g. NCCL_DEBUG=INFO,LOGLEVEL=INFO
        mounts: volumes, e.g. type=bind,src=/data,dst=/data or type=volume,src=pvc-name,dst=/runs
        max_retries: restarts after a rank dies (torchrun --max-restarts, and the scheduler's retries of a lost
            node); each restart resumes from the newest checkpoint
        rdzv_port: port of the c10d rendezvous store on the first node (multi-node only)
        rdzv_backend: torchrun rendezvous backend (c10d, or static / etcd)
        check: what is checked here before the job is submitted (recsys_dist/submit_check.py): auto (the config
            and batch sizes always; data.dir, plan, constraints and the resume checkpoint when they exist on
            this host), all (also those, which must exist here), config (no file looked for), none
    """
    min_nnodes, max_nnodes, nproc_per_node, _ = parse_nnodes(j)
    gpus = specs.resource(cpu=cpu, gpu=gpu, memMB=memMB, h=h).gpu  # a named resource (-h) brings its own
    try:
        if gpus > 0 and nproc_per_node > gpus:
            raise ConfigError(f"-j {j}: {nproc_per_node} processes per node but {gpus} GPUs: one GPU per rank")
        if max_retries < 0:
            raise ConfigError(f"--max_retries {max_retries}: must be >= 0")
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides {bad}: expected section.key=value after `--`, e.g. train.max_steps=100")
        world_sizes = [n * nproc_per_node for n in range(min_nnodes, max_nnodes + 1)]
        check_train_job(config, overrides, world_sizes, check, gpus)
    except ConfigError as e:
        _refuse(e)
    job_env = {"PYTHONUNBUFFERED": "1"}
    if max_nnodes > 1:  # several agents: a fresh store per restart round (see recsys_dist.dist_env.round_store)
        job_env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    job_env.update(env or {})
    app = ddp(
        "train", "--config", config, *overrides,
        m="recsys_dist.cli",
        image=image,
        name=name,
        h=h,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        j=j,
        env=job_env,
        max_retries=max_retries,
        rdzv_port=rdzv_port,
        rdzv_backend=rdzv_backend,
        mounts=mounts,
    )
    _add_torchrun_restarts(app.roles[0], max_retries)
    return app


def _refuse(e: ConfigError) -> NoReturn:
    """Under `torchx run` a bad job is one line and exit 2, as `recsys-dist train` prints it (torchx would print
    a traceback); called from Python, the ConfigError."""
    if os.environ.get("TORCHX_CONTEXT_NAME") != "cli_run":
        raise e
    print(f"torchx component train: config error: {e} (nothing submitted)", file=sys.stderr)
    sys.exit(2)


def _add_torchrun_restarts(role: specs.Role, max_restarts: int) -> None:
    """dist.ddp's command is `bash -c "torchrun ..."` without --max-restarts: restarts are the scheduler's alone,
    and local_cwd has none. The flag goes right after `torchrun`."""
    cmd = role.args[-1]
    if not cmd.startswith("torchrun "):
        raise RuntimeError(f"torchx's dist.ddp changed: expected its command to start with 'torchrun ', got {cmd!r}")
    role.args[-1] = f"torchrun --max-restarts {max_restarts} " + cmd[len("torchrun "):]
