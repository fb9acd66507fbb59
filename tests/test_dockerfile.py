"""The Docker image of the Hugging Face Space: Dockerfile, .dockerignore and its entrypoint.

The Dockerfile is parsed (dockerfile-parse) and checked against the files it must agree with: the
Makefile's Debian package lists and run target, pyproject.toml's pins, the build context. The
entrypoint, scripts/space_start.sh, is run for real with bash, pointed at a temporary /data.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MAKEFILE = ROOT / "Makefile"
PYPROJECT = ROOT / "pyproject.toml"
START = ROOT / "scripts" / "space_start.sh"
APP_DIR = "/app"

# What Hugging Face's Dev Mode needs in the image (huggingface.co/docs/hub/spaces-dev-mode): bash for
# SSH sessions, curl/wget/procps for the VS Code server, git + git-lfs to push from the Space; and rsync,
# which scripts/cloud/sync_data.sh needs on the Space's side of the SSH connection.
DEV_MODE_PACKAGES = {"bash", "curl", "wget", "procps", "git", "git-lfs", "rsync"}
# Python 3.11 (deadsnakes PPA): the interpreter, and venv/ensurepip for the image's virtual environment.
PYTHON_PACKAGES = {"python3.11", "python3.11-venv"}
# Only to add the PPA over HTTPS.
BOOTSTRAP_PACKAGES = {"ca-certificates"}
# What the app reads at run time: all of it must be copied into the image.
RUNTIME_PATHS = {
    "app.py",
    "body4d",
    "models",
    "scripts",
    "assets",
    "LICENSE-SAM",
    "README.md",
    "pyproject.toml",
}
CHECK_TIMEOUT_S = 120


# ------------------------------------------------------------------------------------------- helpers
def parser() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE))


def instructions(name: str) -> list[str]:
    """The values of every ``name`` instruction, line continuations joined."""
    return [item["value"] for item in parser().structure if item["instruction"] == name]


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN value, split at ``&&``, ``||`` and ``;`` (quotes respected)."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in {"&&", "||", ";", "|"}:
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    if current:
        commands.append(current)
    return commands


def all_commands() -> list[list[str]]:
    return [cmd for run in instructions("RUN") for cmd in shell_commands(run)]


def without_env_prefix(cmd: list[str]) -> list[str]:
    """``cmd`` without leading ``VAR=value`` assignments."""
    i = 0
    while i < len(cmd) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", cmd[i]):
        i += 1
    return cmd[i:]


def makefile_variable(name: str) -> list[str]:
    match = re.search(rf"^{name}\s*:?=\s*(.*)$", MAKEFILE.read_text(), re.MULTILINE)
    assert match, f"{name} not found in the Makefile"
    return match.group(1).split()


def makefile_recipe(target: str) -> list[str]:
    match = re.search(rf"^{target}:[^\n]*\n((?:\t[^\n]*\n)+)", MAKEFILE.read_text(), re.MULTILINE)
    assert match, f"target {target} not found in the Makefile"
    return [line.strip() for line in match.group(1).splitlines()]


def apt_installed() -> list[str]:
    packages = []
    for cmd in all_commands():
        cmd = without_env_prefix(cmd)
        if cmd[:2] == ["apt-get", "install"]:
            packages += [arg for arg in cmd[2:] if not arg.startswith("-")]
    return packages


def pip_installs() -> list[list[str]]:
    """The arguments of every ``pip install`` (options included)."""
    found = []
    for cmd in all_commands():
        cmd = without_env_prefix(cmd)
        if "pip" in cmd and cmd[cmd.index("pip") + 1 : cmd.index("pip") + 2] == ["install"]:
            found.append(cmd[cmd.index("pip") + 2 :])
        else:
            assert "pip" not in " ".join(cmd).split(), f"pip used otherwise: {cmd}"
    return found


def pyproject_pins(path: Path = PYPROJECT) -> list[str]:
    deps = tomllib.loads(path.read_text())["project"]["dependencies"]
    return [
        d for d in deps if re.split(r"[^A-Za-z0-9_.-]", d, maxsplit=1)[0].lower() in ("torch", "torchvision")
    ]


def flavour_run() -> str:
    runs = [run for run in instructions("RUN") if "download.pytorch.org" in run]
    assert len(runs) == 1, runs
    return runs[0]


def pin_reader_code() -> str:
    """The Python one-liner of the flavour step that reads the torch/torchvision pins."""
    match = re.search(r"python -c '([^']*)'", flavour_run())
    assert match, "the flavour step reads no pins with python -c"
    return match.group(1)


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY."""
    result = []
    for value in instructions("COPY"):
        args = [a for a in shlex.split(value) if not a.startswith("--")]
        assert len(args) >= 2, value
        result.append((args[:-1], args[-1]))
    return result


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over a context path."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]] | None = None) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the context) out: it or a parent folder
    matches a pattern, the last matching pattern deciding (``!`` re-includes)."""
    rules = dockerignore_rules() if rules is None else rules
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def git_files(*paths: str) -> list[str]:
    res = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--", *paths], capture_output=True, check=True
    )
    return [p for p in res.stdout.decode().split("\0") if p]


# ------------------------------------------------------------------------------- Debian packages
def test_apt_packages_are_runtime_dev_mode_and_python_only():
    runtime = makefile_variable("RUNTIME_APT_PACKAGES")
    test_only = makefile_variable("TEST_APT_PACKAGES")
    assert runtime and test_only
    installed = apt_installed()
    expected = set(runtime) | DEV_MODE_PACKAGES | PYTHON_PACKAGES | BOOTSTRAP_PACKAGES
    assert set(installed) == expected
    # rsync is both: the sync tests need it here, and the Space needs it as the far end of a sync.
    assert not set(installed) & (set(test_only) - {"rsync"})


def test_python_is_deadsnakes_311_on_jammy_cuda_runtime():
    base = parser().baseimage
    assert re.fullmatch(r"(?:docker\.io/)?nvidia/cuda:\d+\.\d+\.\d+-runtime-ubuntu22\.04", base), base
    text = " ".join(instructions("RUN"))
    assert "ppa.launchpadcontent.net/deadsnakes/ppa/ubuntu" in text
    assert "signed-by=" in text
    # The build refuses a pre-release interpreter (jammy's own python3.11 is 3.11.0 rc).
    assert 'releaselevel == "final"' in text
    venv = [cmd for cmd in all_commands() if cmd[:3] == ["python3.11", "-m", "venv"]]
    assert venv == [["python3.11", "-m", "venv", parser().envs["VIRTUAL_ENV"]]]
    assert parser().envs["PATH"].startswith(parser().envs["VIRTUAL_ENV"] + "/bin:")


# ------------------------------------------------------------------------------- Python packages
def test_pip_installs_only_the_project_and_the_torch_flavour():
    installs = pip_installs()
    assert installs, "nothing installed with pip"
    for args in installs:
        assert "-r" not in args and "--requirement" not in args, args
        assert not any("requirements" in a for a in args), args
    plain = [a for a in installs if a == ["."]]
    assert len(plain) == 1, installs  # all pinned dependencies, from pyproject.toml
    reinstall = [a for a in installs if a[-1] == "." and a != ["."]]
    assert reinstall == [["--no-deps", "--editable", "."]], installs  # the CLI runs the code in /app
    flavour = [a for a in installs if a[-1] != "."]
    assert flavour == [["--index-url", "https://download.pytorch.org/whl/${TORCH_CUDA}", "${pins}"]]
    # Order: flavour first, then the dependencies, then the real package.
    runs = instructions("RUN")
    order = [
        next(i for i, r in enumerate(runs) if marker in r)
        for marker in ("${pins}", "pip install .", "--no-deps")
    ]
    assert order == sorted(order)
    assert parser().args["TORCH_CUDA"] == ""  # default: the PyPI wheels


def test_flavour_step_reads_the_pyproject_pins(tmp_path):
    run = flavour_run()
    assert run.startswith('if [ -n "$TORCH_CUDA" ]; then')
    assert "cd /tmp/body4d-deps" in run
    assert copies()[0] == (["pyproject.toml", "README.md"], "/tmp/body4d-deps/")
    code = pin_reader_code()
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.read_text())
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    pins = pyproject_pins()
    assert [p.split("==")[0] for p in pins] == ["torch", "torchvision"]
    assert res.stdout.split() == pins


def test_flavour_pin_reader_refuses_unpinned_torch(tmp_path):
    text = PYPROJECT.read_text()
    pin = next(p for p in pyproject_pins() if p.startswith("torch=="))
    (tmp_path / "pyproject.toml").write_text(text.replace(f'"{pin}"', '"torch>=2"'))
    res = subprocess.run(
        [sys.executable, "-c", pin_reader_code()], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert res.returncode != 0
    assert "AssertionError" in res.stderr


# ------------------------------------------------------------------------- user, environment, start
def test_runs_as_uid_1000_with_home_and_owned_app():
    users = instructions("USER")
    assert users, "no USER"
    user = users[-1]
    useradd = [cmd for cmd in all_commands() if cmd and cmd[0] == "useradd"]
    assert len(useradd) == 1
    cmd = useradd[0]
    assert cmd[-1] == user
    assert cmd[cmd.index("--uid") + 1] == "1000"
    envs = parser().envs
    assert envs["HOME"] == f"/home/{user}"
    assert "--create-home" in cmd
    owned = [c for c in all_commands() if c[:2] == ["install", "-d"] and f"{user}" in c]
    assert owned and {APP_DIR, "/data"} <= set(owned[0])
    assert instructions("WORKDIR")[-1] == APP_DIR
    for value in instructions("COPY"):
        assert f"--chown={user}:{user}" in value.split()


def test_environment_and_port():
    envs = parser().envs
    assert envs["BODY4D_HOST"] == "0.0.0.0"
    assert envs["BODY4D_PORT"] == "7860"
    assert envs["BODY4D_CKPT_ROOT"] == "/data/checkpoints"
    assert envs["BODY4D_OUTPUT_DIR"] == "/data/outputs"
    assert envs["HF_HOME"] == "/data/.huggingface"
    assert envs["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert {"graphics", "compute", "utility"} <= set(envs["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    assert instructions("EXPOSE") == ["7860"]
    front_matter = (ROOT / "README.md").read_text().split("---")[1]
    assert re.search(r"^sdk: docker$", front_matter, re.MULTILINE)
    assert re.search(rf"^app_port: {envs['BODY4D_PORT']}$", front_matter, re.MULTILINE)


def test_egl_vendor_file_names_the_nvidia_driver():
    runs = [r for r in instructions("RUN") if "egl_vendor.d" in r]
    assert len(runs) == 1
    match = re.search(r"'(\{.*\})'\s*>\s*(\S+)", runs[0])
    assert match, runs[0]
    vendor = json.loads(match.group(1))
    assert vendor["ICD"]["library_path"] == "libEGL_nvidia.so.0"
    assert vendor["file_format_version"] == "1.0.0"
    assert match.group(2) == "/usr/share/glvnd/egl_vendor.d/10_nvidia.json"


def test_entrypoint_and_cmd_match_make_run():
    entrypoint = json.loads(instructions("ENTRYPOINT")[-1])
    cmd = json.loads(instructions("CMD")[-1])
    assert entrypoint == [f"{APP_DIR}/scripts/space_start.sh"]
    recipe = makefile_recipe("run")
    assert len(recipe) == 1
    make_cmd = recipe[0].split()
    assert make_cmd[0] == "$(PY)"
    assert cmd == ["python", *make_cmd[1:]]
    # The entrypoint is the copied scripts/space_start.sh, made executable in the image.
    assert (["scripts"], f"{APP_DIR}/scripts") in copies()
    assert ["chmod", "0755", "scripts/space_start.sh"] in all_commands()


def test_entrypoint_script_is_executable_strict_bash():
    text = START.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert START.stat().st_mode & stat.S_IXUSR
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-s", "--", "scripts/space_start.sh"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if tracked:  # once committed, git must keep the executable bit
        assert tracked[0] == "100755"


# --------------------------------------------------------------------------- build context and COPY
def test_copy_sources_exist_and_are_not_dockerignored():
    rules = dockerignore_rules()
    sources = set()
    for srcs, dest in copies():
        for src in srcs:
            assert (ROOT / src).exists(), src
            assert not ignored(src, rules), src
            sources.add(src)
            for tracked in git_files(src):
                assert not ignored(tracked, rules), tracked
        assert dest.startswith("/")
    assert sources >= RUNTIME_PATHS
    app_copies = {src for srcs, dest in copies() if dest.startswith(APP_DIR) for src in srcs}
    assert app_copies >= RUNTIME_PATHS


def test_example_clips_are_in_the_build_context():
    files = git_files("assets/examples")
    assert "assets/examples/street.mp4" in files
    for path in files:
        assert not ignored(path), path
    # Downloaded clips (gitignored) are not excluded either.
    assert not ignored("assets/examples/downloads/example1.mp4")


def test_dockerignore_keeps_local_state_out():
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "outputs/run1/result.glb",
        "checkpoints/sam3/model.safetensors",
        "body4d/__pycache__/app.cpython-311.pyc",
        "models/sam_3d_body/__pycache__/x.pyc",
        ".pytest_cache/v/cache",
        ".ruff_cache/x",
        "body4d.egg-info/PKG-INFO",
        "tests/gltf/node_modules/gltf-validator/index.js",
    ):
        assert ignored(path), path
    assert not ignored("tests/gltf/package-lock.json")
    assert not ignored("body4d/render.py")


# ------------------------------------------------------------------------------ the entrypoint, run
def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MARKER_CODE = (
    "import json, os, sys; "
    "keys = ('BODY4D_CKPT_ROOT', 'BODY4D_OUTPUT_DIR', 'HF_HOME'); "
    "open(sys.argv[1], 'w').write(json.dumps({k: os.environ[k] for k in keys}))"
)


class Start:
    """scripts/space_start.sh run with bash against a temporary /data, HOME and config."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.ckpt = self.data / "checkpoints"
        self.config = tmp_path / "body4d.yaml"
        # setup.py writes paths.ckpt_root into $BODY4D_CONFIG; example clips go to tmp, not the repo.
        self.config_text = f"app:\n  examples_dir: {tmp_path / 'examples'}\n"
        self.config.write_text(self.config_text)
        self.marker = tmp_path / "ran.json"
        port = closed_port()
        proxy = f"http://127.0.0.1:{closed_port()}"
        self.env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(tmp_path / "home"),
            "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
            "LANG": "C.UTF-8",
            "BODY4D_CKPT_ROOT": str(self.ckpt),
            "BODY4D_OUTPUT_DIR": str(self.data / "outputs"),
            "HF_HOME": str(self.data / ".huggingface"),
            "BODY4D_CONFIG": str(self.config),
            # The Hub is unreachable; any other download (example clips) goes to a dead proxy.
            "HF_ENDPOINT": f"http://127.0.0.1:{port}",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HTTP_PROXY": proxy,
            "HTTPS_PROXY": proxy,
            "http_proxy": proxy,
            "https_proxy": proxy,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def run(self, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = command or ("python", "-c", MARKER_CODE, str(self.marker))
        return subprocess.run(
            ["bash", str(START), *command],
            cwd=self.tmp,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            check=False,
        )

    def command_ran(self) -> dict[str, str]:
        assert self.marker.is_file(), "the command did not run"
        return json.loads(self.marker.read_text())

    def setup_ran(self) -> bool:
        """setup.py writes paths.ckpt_root into the config it was pointed at."""
        return self.config.read_text() != self.config_text


@pytest.fixture
def start(tmp_path) -> Start:
    return Start(tmp_path)


def test_start_without_opt_in_creates_folders_and_runs_the_command(start):
    res = start.run(HF_TOKEN="hf_test")
    assert res.returncode == 0, res.stderr
    seen = start.command_ran()
    assert seen == {
        "BODY4D_CKPT_ROOT": str(start.ckpt),
        "BODY4D_OUTPUT_DIR": str(start.data / "outputs"),
        "HF_HOME": str(start.data / ".huggingface"),
    }
    for folder in seen.values():
        assert Path(folder).is_dir()
    assert not start.setup_ran()
    assert "fetching" not in res.stderr


def test_start_opt_in_fetch_fails_offline_and_still_runs(start):
    res = start.run(BODY4D_FETCH_CHECKPOINTS="1", HF_TOKEN="hf_test")
    assert res.returncode == 0, res.stderr
    log = res.stdout + res.stderr
    assert f"fetching: python {START.parent / 'setup.py'} --ckpt-root {start.ckpt}" in log
    assert "--with-completion" not in log
    # setup.py really ran (from the script's folder, not the cwd) and failed on the unreachable Hub.
    assert start.setup_ran()
    assert yaml.safe_load(start.config.read_text())["paths"]["ckpt_root"] == str(start.ckpt)
    assert "could not be downloaded" in log
    assert "SETUP FAILED (exit code 1" in log
    assert start.command_ran()["BODY4D_CKPT_ROOT"] == str(start.ckpt)


def test_start_opt_in_with_completion_passes_the_flag(start):
    res = start.run(BODY4D_FETCH_CHECKPOINTS="true", BODY4D_FETCH_COMPLETION="1", HF_TOKEN="hf_test")
    assert res.returncode == 0, res.stderr
    assert f"--ckpt-root {start.ckpt} --with-completion" in res.stderr
    assert start.setup_ran()
    assert "SETUP FAILED" in res.stderr
    start.command_ran()


def test_start_opt_in_without_token_says_why_and_runs(start):
    res = start.run(BODY4D_FETCH_CHECKPOINTS="1")
    assert res.returncode == 0, res.stderr
    assert "HF_TOKEN is not" in res.stderr
    assert "not fetching" in res.stderr
    assert not start.setup_ran()
    start.command_ran()


def test_start_opt_in_with_checkpoints_present_does_not_fetch(start):
    (start.ckpt / "sam3").mkdir(parents=True)
    (start.ckpt / "sam3" / "config.json").write_text("{}")
    res = start.run(BODY4D_FETCH_CHECKPOINTS="1", HF_TOKEN="hf_test")
    assert res.returncode == 0, res.stderr
    assert f"{start.ckpt} is not empty, not fetching" in res.stderr
    assert not start.setup_ran()
    start.command_ran()


def test_start_execs_the_command_and_keeps_its_exit_code(start):
    proc = subprocess.Popen(
        ["bash", str(START), "bash", "-c", 'echo "$$"; exit 3'],
        cwd=start.tmp,
        env=start.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=CHECK_TIMEOUT_S)
    assert proc.returncode == 3, err
    assert int(out.strip()) == proc.pid  # exec: the command replaced the script's process


def test_start_without_command_is_a_usage_error(start):
    res = subprocess.run(
        ["bash", str(START)],
        env=start.env,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT_S,
        check=False,
    )
    assert res.returncode == 2
    assert "usage:" in res.stderr
