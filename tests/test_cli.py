from __future__ import annotations

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from body4d.cli import main
from body4d.video import encode_video
from tests.conftest import gradient_frames


def test_probe_prints_json(vtest: Path, capsys) -> None:
    assert main(["probe", str(vtest)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == 795 and out["fps"] == 10.0 and out["width"] == 768 and out["height"] == 576
    assert out["codec"] == "msmpeg4" and out["duration"] == 79.5


def test_probe_bad_input_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "x.mp4"
    bad.write_text("nope")
    assert main(["probe", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot be read as a video" in err


def test_console_script_installed(vtest: Path) -> None:
    exe = Path(sys.executable).parent / "body4d"
    res = subprocess.run([str(exe), "probe", str(vtest)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["frames"] == 795


def test_check_reports_missing_checkpoints(tmp_path: Path, capsys) -> None:
    assert main(["check", "--set", f"paths.ckpt_root={tmp_path}"]) == 2
    out = capsys.readouterr().out
    assert f"[MISSING] SAM-3 (facebook/sam3): {tmp_path}/sam3" in out
    assert f"python scripts/setup.py --ckpt-root {tmp_path}" in out


def test_check_bad_config_exit_2(capsys) -> None:
    assert main(["check", "--set", "video.crf=100"]) == 2
    assert "video.crf = 100 is out of range" in capsys.readouterr().err


# --------------------------------------------------------------------- every argument, wrong
REPO = Path(__file__).resolve().parents[1]
# A log record on stderr (logging.basicConfig's format in body4d.cli.main), not the error line.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) ")
EXIT_CODES_HELP_TEXT = "exit codes: 0 done, 1 a bug (traceback in the log), 2 bad input"

# (argv with {clip} {tmp} {file} {dir} {ckpt} placeholders, exit code, what stderr's one line says)
BAD_ARGUMENTS = [
    ([], 2, "body4d: the following arguments are required: command (see body4d --help)"),
    (["bogus"], 2, "body4d: argument command: invalid choice: 'bogus'"),
    (["--nope", "probe", "{clip}"], 2, "body4d: unrecognized arguments: --nope (see body4d --help)"),
    (["probe"], 2, "body4d probe: the following arguments are required: video (see body4d probe --help)"),
    (["probe", "{tmp}/missing.mp4"], 2, "missing.mp4 does not exist: check the path"),
    (["probe", "{file}"], 2, "cannot be read as a video"),
    (["probe", "{dir}"], 2, "holds no frames: put .jpg, .jpeg, .png, .bmp images in it"),
    (["probe", "{clip}", "extra"], 2, "body4d: unrecognized arguments: extra"),
    (["check", "--config", "{tmp}/missing.yaml"], 2, "missing.yaml does not exist or is not a file"),
    (["check", "--config", "{file}"], 2, "body4d check: 1 configuration problem(s)"),
    (["check", "--config"], 2, "body4d check: argument --config: expected one argument"),
    (["check", "--set", "nokey"], 2, "override 'nokey' is not key=value: write e.g. --set"),
    (["check", "--set", "video.nokey=1"], 2, "unknown key video.nokey: valid keys of video are"),
    (["check", "--set", "video.crf=abc"], 2, "video.crf = 'abc' must be an integer"),
    (["check", "--set", "video.crf=100"], 2, "video.crf = 100 is out of range"),
    (["check", "--set", "paths.ckpt_root={tmp}/none"], 2, "body4d check: missing SAM-3 (facebook/sam3), "),
    (["run"], 2, "body4d run: the following arguments are required: --input_video/--input-video"),
    (["run", "--input_video", "{tmp}/missing.mp4"], 2, "missing.mp4 does not exist: check the path"),
    (["run", "--input_video", "{file}"], 2, "cannot be read as a video"),
    (["run", "--input_video", "{dir}"], 2, "holds no frames"),
    (["run", "--input_video", "{clip}", "--prompts", "{tmp}/missing.json"], 2, "missing.json does not exist"),
    (["run", "--input_video", "{clip}", "--prompts", "{file}"], 2, "is not valid JSON"),
    (
        ["run", "--input_video", "{clip}", "--prompts", "{dir}"],
        2,
        "is a folder: pass the prompts file as a file",
    ),
    (
        ["run", "--input_video", "{clip}", "--output_dir", "{file}"],
        2,
        "is a file, not a folder: pass a folder",
    ),
    (["run", "--input_video", "{clip}", "--output_dir", "{file}/sub"], 2, "cannot be created: "),
    (["run", "--input_video", "{clip}", "--set", "runtime.output_dir={file}"], 2, "runtime.output_dir "),
    (["run", "--input_video", "{clip}", "--resume", "nosuchrun"], 2, "'nosuchrun' is not a run id"),
    (["run", "--input_video", "{clip}", "--resume", ""], 2, "'' is not a run id: expected YYYYMMDD"),
    (["run", "--input_video", "{clip}", "--resume", "../.."], 2, "'../..' is not a run id"),
    (
        ["run", "--input_video", "{clip}", "--resume", "20261123_213400_123_0a1b2c3d"],
        2,
        "no run 20261123_213400_123_0a1b2c3d under ",
    ),
    (
        ["run", "--input_video", "{clip}", "--force"],
        2,
        "--force redoes the stages of an existing run: use it with",
    ),
    (["run", "--input_video", "{clip}", "--repair", "x"], 2, "argument --repair: invalid int value: 'x'"),
    (["run", "--input_video", "{clip}", "--repair", "1"], 2, "--repair needs --resume RUN_ID and --prompts"),
    (["run", "--input_video", "{clip}", "--stop-after", "nope"], 2, "--stop-after 'nope' is not a stage"),
    (["run", "--input_video", "{clip}", "--config", "{tmp}/missing.yaml"], 2, "missing.yaml does not exist"),
    (["run", "--input_video", "{clip}", "--set", "video.crf=100"], 2, "video.crf = 100 is out of range"),
    (["run", "--input_video", "{clip}", "--stop-after", "masks"], 2, "scripts/setup.py --ckpt-root"),
    (["doctor", "--input_video", "{tmp}/missing.mp4"], 2, "missing.mp4 does not exist"),
    (["doctor", "--frames", "0"], 2, "argument --frames: 0 is not a positive number of frames: use e.g."),
    (["doctor", "--frames", "abc"], 2, "argument --frames: abc is not a positive number of frames"),
    (
        ["doctor", "--device", "bogus"],
        2,
        "runtime.device = 'bogus' is out of range: use auto, cpu, mps, cuda or cuda:N",
    ),
    (["doctor", "--device", "cuda:7"], 2, "but CUDA is not available here"),
    (["doctor", "--json", "{dir}"], 2, "is a folder: pass the path of the report file to write"),
    (["doctor", "--json", "{file}/report.json"], 2, "--json folder "),
    (["doctor", "--set", "video.crf=100"], 2, "video.crf = 100 is out of range"),
    (["doctor", "--config", "{tmp}/missing.yaml"], 2, "missing.yaml does not exist"),
]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths the placeholders of `BAD_ARGUMENTS` stand for."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    (tmp / "not_a_video.mp4").write_text("nope\n[")
    (tmp / "empty").mkdir()
    clip = encode_video(gradient_frames(4, 32, 48), tmp / "clip.mp4", Fraction(25))
    return {
        "clip": str(clip),
        "tmp": str(tmp),
        "file": str(tmp / "not_a_video.mp4"),
        "dir": str(tmp / "empty"),
    }


@pytest.mark.parametrize(
    ("argv", "code", "says"), BAD_ARGUMENTS, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_every_bad_argument_exits_with_one_line(
    bad_inputs: dict[str, str], tmp_path: Path, argv: list[str], code: int, says: str
) -> None:
    args = [a.format(**bad_inputs) for a in argv]
    out = tmp_path / "out"
    if args[:1] in (["run"], ["doctor"]) and len(args) > 1:  # never the machine's checkpoints or outputs
        args += ["--set", f"paths.ckpt_root={tmp_path}/none"]
        if not any("output_dir" in a for a in args):
            args += ["--set", f"runtime.output_dir={out}"]
    res = subprocess.run(
        [sys.executable, "-m", "body4d", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    lines = [line for line in res.stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    assert len(lines) == 1, res.stderr
    assert says in lines[0]
    assert not out.exists()  # nothing was written for bad input


@pytest.mark.parametrize("command", [[], ["probe"], ["check"], ["run"], ["doctor"]])
def test_help_of_every_command_lists_the_exit_codes(command: list[str]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "body4d", *command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert "4 interrupted (Ctrl-C or SIGTERM)" in text
    if command != ["doctor"]:
        assert EXIT_CODES_HELP_TEXT in text and "3 out of memory" in text
    else:
        assert "1 a checkpoint is missing, a model failed or a figure is out of range" in text


def test_version_and_probe_import_nothing_heavy(vtest: Path) -> None:
    code = (
        "import sys\n"
        "from body4d.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0\n"
        "heavy = ('torch', 'transformers', 'cv2', 'gradio')\n"
        "print(','.join(m for m in heavy if m in sys.modules) or 'none')\n"
        f"assert main(['probe', {str(vtest)!r}]) == 0\n"
        "print(','.join(m for m in heavy if m in sys.modules) or 'none')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:2] == ["body4d 0.1.0", "none"] and lines[-1] == "none"
    assert json.loads(lines[2])["frames"] == 795
