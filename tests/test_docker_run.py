"""The container path for real: docker/Dockerfile is built (once per module, layer cache in use) and
docker/docker-compose.yml runs prepare -> plan -> 2-process torchrun training -> evaluate on a tiny config; a killed
`train` container resumes; `torchx run -s local_docker` trains with the image to the same weights; TensorBoard serves
the run's scalars over HTTP; `down -v` leaves nothing behind.

Needs a Docker daemon: ../shared/tools/docker-local.sh starts one where it exists (it is idempotent); otherwise an
engine that already answers is used; with neither, every test here skips and says why. Marker: docker
(`pytest -m "not docker"` leaves them out)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from checkpoint_state import assert_same_weights, full_state
from dist_harness import free_port

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCKER_LOCAL = REPO.parent / "shared" / "tools" / "docker-local.sh"
COMPOSE_FILE = REPO / "docker" / "docker-compose.yml"
IMAGE = "recsys-dist:pytest"
# The tiny run: 3 synthetic days of 4000 rows, 125 steps of 64 rows on 2 ranks, a checkpoint every 10 steps;
# one thread per rank (the default follows the idle cores, and the thread count changes float sums).
OVERRIDES = ("synth.rows_per_day=4000 data.batch_size=64 train.checkpoint_every_steps=10 "
             "train.log_every_steps=10 train.threads=1")
STEPS = 125
# The final stage's layers after the venv's (COPY of README, code, configs): the image's last layers.
_FINAL = (REPO / "docker" / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1].splitlines()
AFTER_VENV = [line for line in _FINAL[[i for i, x in enumerate(_FINAL) if x.startswith("COPY --from=deps")][0] + 1:]
              if line.startswith("COPY ")]
# What the build context holds (.dockerignore lets only these through).
CONTEXT = ["pyproject.toml", "setup.sh", "README.md", ".dockerignore", "packaging", "docker", "recsys_dist",
           "embedding_sharding", "pipelines", "launch", "configs"]


def _run(cmd, timeout=600, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} -> exit {r.returncode}\n"
                             f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def _docker_works():
    return shutil.which("docker") is not None and _run(["docker", "info"], 60, check=False).returncode == 0


@pytest.fixture(scope="module")
def docker_ready():
    """A working daemon and base image (docker-local.sh where it exists), or a skip that says why."""
    reason = "no docker CLI and no ../shared/tools/docker-local.sh to install one"
    if DOCKER_LOCAL.is_file():
        r = _run(["bash", str(DOCKER_LOCAL)], 900, check=False)
        reason = f"{DOCKER_LOCAL} failed: {(r.stdout + r.stderr).strip()[-500:]}"
    elif shutil.which("docker"):
        reason = "`docker info` does not answer (no daemon) and ../shared/tools/docker-local.sh is absent"
    if not _docker_works():
        pytest.skip(reason)
    compose = ["docker", "compose"]
    if _run(compose + ["version"], 60, check=False).returncode != 0:
        if shutil.which("docker-compose") is None:
            pytest.skip("neither `docker compose` nor docker-compose is installed")
        compose = ["docker-compose"]
    return compose


def _build(context, tag):
    """Builds docker/Dockerfile (CPU) in `context`; returns the seconds it took and the build log."""
    uid = os.getuid()
    args = ["--build-arg", f"UID={uid}", "--build-arg", f"GID={os.getgid()}"] if uid != 0 else []
    t = time.perf_counter()
    r = _run(["docker", "build", "--network", "host", "-f", "docker/Dockerfile", "-t", tag, *args, "."], 1800,
             cwd=context)
    return time.perf_counter() - t, r.stdout + r.stderr


def _cached(log, needle):
    """Did the build take the step whose instruction contains `needle` from the layer cache?"""
    legacy = re.search(r"^Step \d+/\d+ : [^\n]*" + re.escape(needle) + r"[^\n]*\n ---> Using cache$", log, re.M)
    kit = re.search(r"^#(\d+) \[[^\n]*" + re.escape(needle), log, re.M)
    return bool(legacy or (kit and re.search(rf"^#{kit.group(1)} CACHED$", log, re.M)))


def _inspect(obj, fmt):
    return _run(["docker", "inspect", "-f", fmt, obj], 60).stdout.strip()


@pytest.fixture(scope="module")
def image(docker_ready):
    """The image of this tree, built once for every test here (cached layers reused, as a user's rebuild)."""
    seconds, log = _build(REPO, IMAGE)
    print(f"docker build: {seconds:.0f}s")
    return _inspect(IMAGE, "{{.Id}}")


def _labelled(kind, label):
    return _run(["docker", kind, "ls", "-q", "--filter", f"label={label}"]
                + (["-a"] if kind == "container" else []), 60).stdout.split()


@pytest.fixture(scope="module")
def stack(docker_ready, image, tmp_path_factory):
    """A compose project of its own; torn down (down -v, torchx containers removed) whatever happens."""
    project = f"recsystest{os.getpid()}"
    env = dict(os.environ, RECSYS_IMAGE=IMAGE, OVERRIDES=OVERRIDES, NPROC="2", TENSORBOARD_PORT=str(free_port()))
    compose = docker_ready + ["-p", project, "-f", str(COMPOSE_FILE)]
    s = Stack(project, compose, env, tmp_path_factory.mktemp("docker"))
    yield s
    _run(compose + ["--profile", "monitor", "down", "-v", "--remove-orphans"], 300, check=False, env=env)
    for volume in _labelled("volume", f"com.docker.compose.project={project}"):
        _run(["docker", "volume", "rm", volume], 60, check=False)


class Stack:
    def __init__(self, project, compose, env, tmp):
        self.project, self.compose, self.env, self.tmp = project, compose, env, tmp
        self.volumes_before = set(_run(["docker", "volume", "ls", "-q"], 60).stdout.split())

    def __call__(self, *args, timeout=900, check=True, **env):
        return _run(self.compose + list(args), timeout, check=check, env=dict(self.env, **env))

    def container(self, service):
        ids = _labelled("container", f"com.docker.compose.project={self.project}")
        ids = [c for c in ids if _inspect(c, '{{index .Config.Labels "com.docker.compose.service"}}') == service]
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def exit_code(self, service):
        return int(_inspect(self.container(service), "{{.State.ExitCode}}"))

    def copy_out(self, path, name):
        """A folder of the project's volumes, copied to the host (from the train container's mounts)."""
        dest = self.tmp / name
        _run(["docker", "cp", f"{self.container('train')}:{path}", str(dest)], 300)
        return dest


@pytest.fixture(scope="module")
def compose_run(stack):
    """`up evaluate`: prepare -> plan -> train (torchrun, 2 processes) -> evaluate, uninterrupted."""
    t = time.perf_counter()
    stack("up", "evaluate")
    print(f"compose up evaluate: {time.perf_counter() - t:.0f}s")
    return stack.copy_out("/runs/train", "train")


def test_cpu_image_has_no_cuda_and_runs_as_non_root(image):
    """Catches: a CUDA torch or nvidia-* wheels in the CPU image (e.g. an unpinned torch resolved on PyPI), and an
    image that runs as root."""
    r = _run(["docker", "run", "--rm", image, "bash", "-c",
              "id -u; pip list --format=freeze | grep -ic '^nvidia-' || true; "
              "python -c 'import torch; print(torch.__version__, torch.version.cuda)'"], 300)
    uid, nvidia, torch_line = r.stdout.split("\n")[:3]
    assert uid != "0" and _inspect(image, "{{.Config.User}}") not in ("", "root", "0")
    assert nvidia == "0", "nvidia-* packages in the CPU image"
    assert torch_line.endswith("+cpu None"), torch_line


def test_code_only_change_rebuilds_from_cache(image, tmp_path):
    """Catches: a Dockerfile whose dependency layer depends on the code or README (an edit re-runs setup.sh:
    minutes, and the stack downloaded again), and a .dockerignore that lets volatile files into the context."""
    ctx = tmp_path / "ctx"
    for name in CONTEXT:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, ctx / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / name)
    probe = f"# cache probe {time.time_ns()}\n"
    for changed in ("recsys_dist/cli/__init__.py", "README.md"):
        with open(ctx / changed, "a") as f:
            f.write(probe)
    (ctx / "runs").mkdir()
    (ctx / "runs" / "junk.bin").write_bytes(os.urandom(1024))  # excluded by .dockerignore: must not matter
    tag = f"recsys-dist:pytest-probe{os.getpid()}"
    try:
        seconds, log = _build(ctx, tag)
        for step in ("./setup.sh", "COPY --from=deps /app/.venv"):
            assert _cached(log, step), f"`{step}` was not taken from the cache:\n{log[-3000:]}"
        venv = json.loads(_inspect(image, "{{json .RootFS.Layers}}"))[:-len(AFTER_VENV)]
        assert json.loads(_inspect(tag, "{{json .RootFS.Layers}}"))[:len(venv)] == venv
        assert seconds < 60, f"a code-only rebuild took {seconds:.0f}s\n{log[-2000:]}"
        got = _run(["docker", "run", "--rm", tag, "tail", "-1", "recsys_dist/cli/__init__.py"], 120).stdout
        assert got == probe
        print(f"code-only rebuild: {seconds:.1f}s")
    finally:
        _run(["docker", "rmi", tag], 120, check=False)


def test_image_size_is_the_documented_one(image):
    """Catches: docs/launch.md's image size going stale (what the project adds to its base grew or shrank by more
    than 10%; the base itself differs between these machines' stand-in and the real python image)."""
    m = re.search(r"adds ([\d.]+) GB to its base", (REPO / "docs" / "launch.md").read_text())
    assert m, "docs/launch.md: no 'adds N.NN GB to its base'"
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", (REPO / "docker" / "Dockerfile").read_text(), re.M).group(1)
    added = (int(_inspect(image, "{{.Size}}")) - int(_inspect(base, "{{.Size}}"))) / 1e9
    assert abs(added - float(m.group(1))) <= 0.1 * float(m.group(1)), f"the image adds {added:.2f} GB to its base"


def test_compose_stack_runs_in_order_and_evaluate_agrees(stack, compose_run):
    """Catches: a service that fails or never runs (every exit code is checked), services that do not share the
    volumes (evaluate would not find train's checkpoint), and an evaluate that differs from training's test AUC."""
    for service in ("prepare", "plan", "train", "evaluate"):
        assert stack.exit_code(service) == 0, service
    result = json.loads((compose_run / "result.json").read_text())
    assert result["steps"] == STEPS and result["world_size"] == 2 and result["resumed_from_step"] is None
    evaluated = json.loads(_run(["docker", "logs", stack.container("evaluate")], 60).stdout)
    assert evaluated["step"] == result["test_step"]  # the checkpoint training tested (train.keep_best)
    assert evaluated["auc"] == pytest.approx(result["test"]["auc"], abs=1e-6)
    assert evaluated["logloss"] == pytest.approx(result["test"]["logloss"], abs=1e-6)


def _wait_for_checkpoint(container, run_dir, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = _run(["docker", "exec", container, "bash", "-c", f"ls {run_dir}/checkpoints/*/recsys_dist.json"], 60,
                 check=False)
        if r.returncode == 0:
            return True
        if _inspect(container, "{{.State.Running}}") != "true":
            return False
        time.sleep(0.1)
    return False


def test_killed_train_container_resumes_to_the_same_weights(stack, compose_run, tmp_path):
    """Catches: a train service that starts over (or fails) after its container is killed, e.g. a run folder
    that is not on the volume, train.resume not auto, checkpoints that are not complete on disk, or an input
    position not restored (weights would differ from the uninterrupted run)."""
    run_dir = "/runs/killed"
    stack("up", "-d", "train", RUN_DIR=run_dir)
    train = stack.container("train")
    assert _wait_for_checkpoint(train, run_dir), "train ended before its first periodic checkpoint"
    _run(["docker", "kill", train], 60)
    assert _inspect(train, "{{.State.ExitCode}}") == "137"
    stack("up", "train", RUN_DIR=run_dir)  # as a user would, after the crash
    assert stack.exit_code("train") == 0
    out = stack.copy_out(run_dir, "killed")
    resumes = [e for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
               if e["event"] == "resume"]
    assert len(resumes) == 1 and 0 < resumes[0]["step"] < STEPS, resumes
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == STEPS and result["resumed_from_step"] == resumes[0]["step"]
    assert_same_weights(full_state(compose_run / "checkpoint", tmp_path), full_state(out / "checkpoint", tmp_path))


def test_torchx_local_docker_trains_like_compose(stack, compose_run, image, tmp_path):
    """Catches: a component or image that local_docker cannot run (e.g. an image ENTRYPOINT in front of torchx's
    command), a container run that differs from the compose run (same data, plan and settings: same weights), and
    files on a bind-mounted host folder owned by another user than the folder's."""
    out = tmp_path / "out"
    out.mkdir()
    if os.getuid() == 0:  # root on the host: hand the folder to the image's user, as a user's own folder is
        os.chown(out, *map(int, _inspect(image, "{{.Config.User}}").split(":")))
    mounts = (f"type=volume,src={stack.project}_data,dst=/data,type=volume,src={stack.project}_plans,dst=/plans,"
              f"type=bind,src={out},dst=/out")
    # --workspace "": the image as built (torchx would otherwise overlay the current directory on it)
    cmd = [str(BIN / "torchx"), "run", "-s", "local_docker", "--wait", "--workspace", "",
           "launch/components.py:train", "-j", "1x2",
           "--image", image, "--max_retries", "0", "--mounts", mounts, "--",
           "data.dir=/data/prepared", "sharding.plan=/plans/plan.json", "train.out_dir=/out/torchx",
           "train.checkpoint_every_steps=500", *OVERRIDES.split()]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(REPO))
    had_network = _run(["docker", "network", "inspect", "torchx"], 60, check=False).returncode == 0
    images = set(_run(["docker", "images", "-aq"], 60).stdout.split())
    r = _run(cmd, 900, check=False, cwd=REPO, env=env)
    apps = re.findall(r"local_docker://torchx/([\w-]+)", r.stdout + r.stderr)
    for app in apps:  # torchx keeps finished containers (they hold the project's volumes): remove them
        _run(["docker", "rm", "-f", *_labelled("container", f"torchx.pytorch.org/app-id={app}")], 60, check=False)
    if not had_network:
        _run(["docker", "network", "rm", "torchx"], 60, check=False)
    assert apps and r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    left = set(_run(["docker", "images", "-aq"], 60).stdout.split()) - images
    assert not left, f"torchx left images behind: {left}"
    run = out / "torchx"
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == STEPS and result["world_size"] == 2
    assert_same_weights(full_state(compose_run / "checkpoint", tmp_path), full_state(run / "checkpoint", tmp_path))
    owner = (out.stat().st_uid, out.stat().st_gid)
    assert {(p.stat().st_uid, p.stat().st_gid) for p in run.rglob("*")} == {owner}


def _get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_tensorboard_serves_the_runs_scalars(stack, compose_run):
    """Catches: a monitor profile whose TensorBoard does not start or is unreachable from the host, a health check
    that never turns healthy, a logdir that misses the runs volume, and volume files not owned by the image user."""
    stack("--profile", "monitor", "up", "-d", "tensorboard")
    tb = stack.container("tensorboard")
    deadline = time.time() + 300
    while (health := _inspect(tb, "{{.State.Health.Status}}")) != "healthy":
        assert health == "starting" and time.time() < deadline, f"tensorboard is {health}"
        time.sleep(1)
    base = f"http://127.0.0.1:{stack.env['TENSORBOARD_PORT']}/data/plugin/scalars"
    tags = _get_json(f"{base}/tags")
    assert {"train/loss", "test/auc", "val/auc"} <= tags["train/tensorboard"].keys(), tags
    query = urllib.parse.urlencode({"run": "train/tensorboard", "tag": "test/auc"})
    [(_, _, auc)] = _get_json(f"{base}/scalars?{query}")
    result = json.loads((compose_run / "result.json").read_text())
    assert auc == pytest.approx(result["test"]["auc"], abs=1e-6)
    foreign = _run(["docker", "exec", tb, "find", "/runs", "/data", "/plans", "!", "-user", "recsys"], 60).stdout
    assert foreign == "", f"files in the volumes not owned by the image user:\n{foreign[:2000]}"


def test_down_v_leaves_nothing_behind(stack, compose_run):
    """Catches: containers, networks or volumes a compose run leaves after `down -v` (e.g. anonymous volumes from a
    VOLUME instruction in the image)."""
    stack("--profile", "monitor", "down", "-v", "--remove-orphans")
    label = f"com.docker.compose.project={stack.project}"
    assert _labelled("container", label) == []
    assert _labelled("network", label) == []
    assert _labelled("volume", label) == []
    new = set(_run(["docker", "volume", "ls", "-q"], 60).stdout.split()) - stack.volumes_before
    assert not new, f"volumes left behind: {new}"
