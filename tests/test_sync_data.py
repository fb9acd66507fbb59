"""scripts/cloud/sync_data.sh run for real with bash: between local folders, and over ssh to a throwaway
sshd on 127.0.0.1 (host-key checking on, nothing ever deleted)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cloud" / "sync_data.sh"
SSHD = Path("/usr/sbin/sshd")
RUN_A = "20261203_144628_123_1a2b3c4d"
RUN_B = "20261204_090000_007_deadbeef"
# Installed on a fresh machine by the Makefile's TEST_APT_PACKAGES: missing ones fail the test, never skip it.
INSTALL_HINT = "install rsync, openssh-client and openssh-server (the Makefile's TEST_APT_PACKAGES)"


def _run(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The script under bash, with no BODY4D_* / ssh-agent settings of the caller."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BODY4D_") and k != "SSH_AUTH_SOCK"}
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> contents of every file under ``folder``."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _make_remote_outputs(folder: Path) -> None:
    """Two run folders, each with a run-time temporary in .scratch/ (not fetched)."""
    _write(
        folder,
        {
            f"{RUN_A}/manifest.json": b'{"run": "a"}',
            f"{RUN_A}/people/0/mesh.glb": os.urandom(3000),
            f"{RUN_A}/.scratch/labels.npy": b"tmp",
            f"{RUN_B}/manifest.json": b'{"run": "b"}',
            f"{RUN_B}/result.mp4": os.urandom(5000),
        },
    )


def _expected_runs(remote: Path, *runs: str) -> dict[str, bytes]:
    return {k: v for k, v in _tree(remote).items() if k.split("/")[0] in runs and "/.scratch/" not in k}


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("rsync", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: {INSTALL_HINT}")


def test_help_prints_the_usage() -> None:
    res = _run("--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Usage: scripts/cloud/sync_data.sh up   [options] [FILE|DIR ...]")
    for word in (
        "--host",
        "BODY4D_SSH_HOST",
        "--port",
        "--ssh-config",
        "--remote-inputs",
        "--remote-outputs",
    ):
        assert word in res.stdout
    assert "--local-outputs" in res.stdout and "--dry-run" in res.stdout
    assert _run("down", "-h").returncode == 0


def test_local_up_copies_and_never_deletes(tmp_path: Path) -> None:
    src = tmp_path / "videos"
    _write(src, {"street.mp4": os.urandom(4000), "clips/a.mov": b"a", "clips/b.mov": b"b"})
    remote = tmp_path / "remote_inputs"
    _write(remote, {"old.mp4": b"only on the remote"})

    res = _run("up", "--host", "local", "--remote-inputs", remote, src / "street.mp4", src / "clips")
    assert res.returncode == 0, res.stderr
    assert _tree(remote) == {
        "old.mp4": b"only on the remote",
        "street.mp4": (src / "street.mp4").read_bytes(),
        "clips/a.mov": b"a",
        "clips/b.mov": b"b",
    }
    assert _tree(src) == {
        "street.mp4": (src / "street.mp4").read_bytes(),
        "clips/a.mov": b"a",
        "clips/b.mov": b"b",
    }, "sources are never removed"

    # No FILE named: the local inputs folder's contents; flags win over the environment.
    remote2 = tmp_path / "remote_inputs2"
    res = _run(
        "up",
        "--remote-inputs",
        remote2,
        BODY4D_SSH_HOST="",
        BODY4D_LOCAL_INPUTS=str(src / "clips"),
        BODY4D_REMOTE_INPUTS=str(tmp_path / "not_this_one"),
    )
    assert res.returncode == 0, res.stderr
    assert _tree(remote2) == {"a.mov": b"a", "b.mov": b"b"}
    assert not (tmp_path / "not_this_one").exists()


def test_local_down_copies_all_runs_or_the_named_ones_and_never_deletes(tmp_path: Path) -> None:
    remote = tmp_path / "remote_outputs"
    _make_remote_outputs(remote)
    before = _tree(remote)
    local = tmp_path / "outputs"
    _write(local, {"mine.txt": b"only here", "20200101_000000_000_00000000/x": b"old run"})

    res = _run("down", "--remote-outputs", remote, "--local-outputs", local, BODY4D_SSH_HOST="local")
    assert res.returncode == 0, res.stderr
    got = _tree(local)
    assert got == {
        **_expected_runs(remote, RUN_A, RUN_B),
        "mine.txt": b"only here",
        "20200101_000000_000_00000000/x": b"old run",
    }
    assert not (local / RUN_A / ".scratch").exists(), "run temporaries are not fetched"
    assert _tree(remote) == before

    one = tmp_path / "one"
    res = _run("down", "--remote-outputs", remote, "--local-outputs", one, RUN_B + "/")
    assert res.returncode == 0, res.stderr
    assert _tree(one) == _expected_runs(remote, RUN_B)

    missing = "20991231_235959_999_ffffffff"
    res = _run("down", "--remote-outputs", remote, "--local-outputs", one, missing)
    assert res.returncode == 23
    assert missing in res.stderr and "check that the runs exist" in res.stderr


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "street.mp4"
    src.write_bytes(b"video")
    remote_in = tmp_path / "remote_inputs"
    remote_in.mkdir()
    res = _run("up", "--dry-run", "--remote-inputs", remote_in, src)
    assert res.returncode == 0, res.stderr
    assert "street.mp4" in res.stdout and "dry run" in res.stdout
    assert _tree(remote_in) == {}

    remote_out = tmp_path / "remote_outputs"
    _make_remote_outputs(remote_out)
    local = tmp_path / "outputs"
    res = _run("down", "-n", "--remote-outputs", remote_out, "--local-outputs", local)
    assert res.returncode == 0, res.stderr
    assert f"{RUN_A}/manifest.json" in res.stdout
    assert not local.exists(), "a dry run does not even create the outputs folder"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["down", "../etc"], "not a run id: '../etc'"),
        (["down", RUN_A, f"{RUN_A}/../../etc"], f"not a run id: '{RUN_A}/../../etc'"),
        (["sideways"], "unknown command: sideways"),
        ([], "no command"),
        (["up", "--delete", "x"], "unknown option: --delete"),
        (["down", "--remove-source-files"], "unknown option: --remove-source-files"),
        (["up", "no/such/video.mp4"], "no such file or folder: no/such/video.mp4"),
        (["up", "--host"], "option --host needs a value"),
        (["up", "--host", "-oProxyCommand=x", "."], "bad host: -oProxyCommand=x"),
        (["up", "--host", "h", "--port", "99999", "."], "bad port: 99999"),
        (["up", "--host", "h", "--ssh-config", "/no/such/config", "."], "no such ssh config file"),
        (
            ["up", "--local-inputs", "/no/such/inputs"],
            "the local inputs folder /no/such/inputs does not exist",
        ),
    ],
)
def test_usage_errors_exit_2_naming_the_problem(args: list[str], named: str, tmp_path: Path) -> None:
    res = _run("--remote-outputs", tmp_path / "ro", "--local-outputs", tmp_path / "lo", *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert named in res.stderr
    assert "--help" in res.stderr
    assert res.stdout == "", "nothing was started"
    assert not (tmp_path / "lo").exists()


def test_a_missing_or_old_rsync_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"a")
    bash = shutil.which("bash")
    assert bash is not None
    res = subprocess.run(
        [bash, str(SCRIPT), "up", str(tmp_path / "a.mp4")],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path / "empty")},
        timeout=30,
    )
    assert res.returncode == 127
    assert "rsync is not installed" in res.stderr and "apt-get install rsync" in res.stderr

    # macOS's openrsync (2.6.9 compatible, no --info=progress2): too old, named before any copy.
    fake = tmp_path / "bin" / "rsync"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\nprintf 'openrsync: protocol version 29\\nrsync version 2.6.9 compatible\\n'\n"
    )
    fake.chmod(0o755)
    res = subprocess.run(
        [bash, str(SCRIPT), "up", str(tmp_path / "a.mp4")],
        capture_output=True,
        text=True,
        env={"PATH": str(fake.parent)},
        timeout=30,
    )
    assert res.returncode == 127
    assert "rsync is too old (version 2.6.9; 3.1 or newer is needed)" in res.stderr


# ---------------------------------------------------------------------------------------------------
# Over ssh, to a real sshd on 127.0.0.1


@dataclass
class SshServer:
    """A running sshd and a client config (`ssh -F config`) for it.

    Attributes:
        config: client config with ``Host body4d-test`` (port set), ``Host body4d-noport`` (port 22
            unless --port is given) and ``Host body4d-norsync`` (a second port where every command runs
            with no rsync on its PATH).
        known_hosts: the client's known_hosts file (empty at first).
        host_key_line: the lines that make the server known (on both ports).
        port: the server's main port.
    """

    config: Path
    known_hosts: Path
    host_key_line: str
    port: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[SshServer]:
    if not SSHD.is_file():
        pytest.fail(f"{SSHD} is missing: {INSTALL_HINT}")
    d = tmp_path / "ssh cfg"  # a space in the paths: the script quotes them for rsync -e
    d.mkdir()
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port, norsync_port = _free_port(), _free_port()
    (d / "sshd_config").write_text(
        f'ListenAddress 127.0.0.1\nHostKey "{d}/host_key"\nAuthorizedKeysFile "{d}/authorized_keys"\n'
        f'PidFile "{d}/sshd.pid"\nStrictModes no\nUsePAM no\nPubkeyAuthentication yes\n'
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        # The second port: a machine without rsync (ForceCommand runs the command through the login shell).
        f"Match LocalPort {norsync_port}\n"
        '  ForceCommand env PATH=/nonexistent /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
    )
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    except OSError as exc:
        pytest.fail(f"cannot create /run/sshd for sshd ({exc}): run the tests as root")
    known_hosts = d / "known_hosts"
    known_hosts.write_text("")
    client = (
        f'  HostName 127.0.0.1\n  User {getpass.getuser()}\n  IdentityFile "{d}/client_key"\n'
        f'  IdentitiesOnly yes\n  UserKnownHostsFile "{known_hosts}"\n  GlobalKnownHostsFile /dev/null\n'
    )
    (d / "config").write_text(
        f"Host body4d-test\n  Port {port}\n{client}\nHost body4d-noport\n{client}\n"
        f"Host body4d-norsync\n  Port {norsync_port}\n{client}"
    )
    log = (d / "sshd.log").open("w")
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port), "-p", str(norsync_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        for p in (port, norsync_port):
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"sshd exited with {proc.returncode}: {(d / 'sshd.log').read_text()}")
                try:
                    with socket.create_connection(("127.0.0.1", p), timeout=1) as s:
                        if s.recv(64).startswith(b"SSH-"):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"sshd did not answer on port {p}: {(d / 'sshd.log').read_text()}")
                time.sleep(0.05)
        key = " ".join((d / "host_key.pub").read_text().split()[:2])
        lines = f"[127.0.0.1]:{port} {key}\n[127.0.0.1]:{norsync_port} {key}\n"
        yield SshServer(d / "config", known_hosts, lines, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def test_over_ssh_an_unknown_host_key_is_refused_then_up_and_down_work(
    ssh_server: SshServer, tmp_path: Path
) -> None:
    src = tmp_path / "videos"
    _write(src, {"street.mp4": os.urandom(20000), "more/b.mov": b"b"})
    remote_in = tmp_path / "remote_inputs"
    _write(remote_in, {"old.mp4": b"only on the remote"})
    remote_out = tmp_path / "remote_outputs"
    _make_remote_outputs(remote_out)
    remote_out_before = _tree(remote_out)
    local = tmp_path / "outputs"
    _write(local, {"mine.txt": b"only here"})
    common = ["--ssh-config", ssh_server.config, "--remote-inputs", remote_in, "--remote-outputs", remote_out]

    # Unknown host key: refused, with the way out; nothing copied either way.
    for args in (["up", src / "street.mp4"], ["down"]):
        res = _run(*args, *common, "--local-outputs", local, BODY4D_SSH_HOST="body4d-test")
        assert res.returncode == 255, res.stdout + res.stderr
        assert "host key of body4d-test is not known" in res.stderr
        config = str(ssh_server.config).replace(" ", "\\ ")  # shell-quoted, as printf %q does
        assert f'connect once with "ssh -F {config} body4d-test"' in res.stderr
        assert "fingerprint" in res.stderr and "known_hosts" in res.stderr
    assert _tree(remote_in) == {"old.mp4": b"only on the remote"}
    assert _tree(local) == {"mine.txt": b"only here"}

    # A different key saved for the host: refused as a changed key.
    other = tmp_path / "other_key"
    _keygen(other)
    ssh_server.known_hosts.write_text(
        f"[127.0.0.1]:{ssh_server.port} {other.with_suffix('.pub').read_text()}"
    )
    res = _run("down", *common, "--host", "body4d-test", "--local-outputs", local)
    assert res.returncode == 255 and "has CHANGED" in res.stderr
    assert _tree(local) == {"mine.txt": b"only here"}

    # Known: up and down work over ssh; flags win over the environment (BODY4D_SSH_HOST is wrong).
    ssh_server.known_hosts.write_text(ssh_server.host_key_line)
    res = _run(
        "up", "--host", "body4d-test", *common, src / "street.mp4", src / "more", BODY4D_SSH_HOST="nope"
    )
    assert res.returncode == 0, res.stderr
    assert _tree(remote_in) == {
        "old.mp4": b"only on the remote",
        "street.mp4": (src / "street.mp4").read_bytes(),
        "more/b.mov": b"b",
    }

    res = _run("down", "--host", "body4d-test", *common, "--local-outputs", local)
    assert res.returncode == 0, res.stderr
    assert _tree(local) == {**_expected_runs(remote_out, RUN_A, RUN_B), "mine.txt": b"only here"}
    assert _tree(remote_out) == remote_out_before, "nothing is deleted remotely"

    # One named run, the port from --port (the alias has none) and the config from the environment.
    one = tmp_path / "one"
    res = _run(
        "down",
        "--host",
        "body4d-noport",
        "--port",
        str(ssh_server.port),
        "--remote-outputs",
        remote_out,
        "--local-outputs",
        one,
        RUN_A,
        BODY4D_SSH_CONFIG=str(ssh_server.config),
    )
    assert res.returncode == 0, res.stderr
    assert _tree(one) == _expected_runs(remote_out, RUN_A)
    assert _tree(remote_out) == remote_out_before

    # A host without rsync: named before anything is copied.
    res = _run("up", "--host", "body4d-norsync", *common, src / "street.mp4")
    assert res.returncode == 127, res.stdout + res.stderr
    assert "rsync is not installed on body4d-norsync" in res.stderr


def test_the_script_never_deletes_nor_trusts_unknown_hosts() -> None:
    text = SCRIPT.read_text()
    for word in ("--delete", "--remove-source-files", "StrictHostKeyChecking=no"):
        assert word not in text
    assert "StrictHostKeyChecking=yes" in text and "BatchMode=yes" in text
    assert os.access(SCRIPT, os.X_OK), "the script stays executable"
