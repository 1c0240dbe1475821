"""What ``streamdetect demo`` submits: for the ``mini`` profile, clean scenes and their PGD-attacked
copies (made, with the threshold, by the same commands an operator would run); for ``tiny``,
drawn shapes; and for every profile three uploads that cannot be judged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from streamdetect.settings import Settings

TINY_DEMO_THRESHOLD = 0.97
SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "circle"), ("white", "square")]
MINI_SCENES = 6  # clean test scenes, each also attacked
CALIBRATION_SCENES = 300  # clean validation scenes the threshold is fitted on
DEMO_TARGET_FPR = 0.02
ATTACK_EPS = 8.0


@dataclass(frozen=True)
class DemoUpload:
    label: str
    target: str  # a local file, or a reference the worker resolves
    caption: str | None = None  # the platform's own caption, if any


def bad_uploads(folder: Path, settings: Settings) -> list[DemoUpload]:
    """Three uploads that cannot be judged; each must reach the dead-letter topic with a reason.
    The second points at the worker's own metrics endpoint: an SSRF attempt the guard refuses."""
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    internal = f"https://127.0.0.1:{settings.metrics_port}/metrics"
    return [DemoUpload("corrupt.png", str(corrupt)), DemoUpload(internal, internal),
            DemoUpload("file:///etc/hostname", "file:///etc/hostname")]


def tiny_uploads(folder: Path) -> list[DemoUpload]:
    """Five drawn shapes; the last carries the platform's own caption, so captioning is skipped."""
    uploads = []
    for i, (colour, shape) in enumerate(SHAPES):
        path = folder / f"{colour}-{shape}.png"
        _draw(colour, shape).save(path)
        own = f"a {colour} {shape}" if i == len(SHAPES) - 1 else None
        uploads.append(DemoUpload(path.name, str(path), own))
    return uploads


def _draw(colour: str, shape: str) -> Image.Image:
    image = Image.new("RGB", (64, 64), "gray")
    draw = ImageDraw.Draw(image)
    box = (16, 16, 48, 48)
    {"circle": draw.ellipse, "square": draw.rectangle}.get(shape, lambda b, fill: draw.polygon(
        [(32, 12), (52, 50), (12, 50)], fill=fill))(box, fill=colour)
    return image


def mini_uploads(folder: Path, env: dict[str, str]) -> tuple[list[DemoUpload], Path]:
    """Calibrate on clean validation scenes, attack test scenes; the uploads and the threshold file.
    Runs the same commands an operator would, so each step can be rerun by hand."""
    scenes, threshold_file, attacked = folder / "calibration", folder / "threshold.json", folder / "attack"
    _step(env, f"fitting the threshold for {DEMO_TARGET_FPR:.0%} FPR on {CALIBRATION_SCENES} clean validation scenes",
          ["mini", "scenes", "--split", "val", "--n", str(CALIBRATION_SCENES), "--out", str(scenes)],
          ["calibrate", "--clean-dir", str(scenes), "--target-fpr", str(DEMO_TARGET_FPR),
           "--threshold-file", str(threshold_file)])
    _step(env, f"attacking {MINI_SCENES} test scenes: eps {ATTACK_EPS:g}/255 PGD towards a chosen wrong caption",
          ["attack", "--kind", "pgd", "--eps", f"{ATTACK_EPS:g}", "--n", str(MINI_SCENES), "--out", str(attacked)])
    items = json.loads((attacked / "results.json").read_text())["items"]
    uploads = []
    for i, item in enumerate(items):
        own = item["truth"] if i == len(items) - 1 else None  # one upload skips the caption stage
        uploads.append(DemoUpload(f"clean/{i:04d}.png", str(attacked / "clean" / f"{i:04d}.png"), own))
    for i, item in enumerate(items):
        print(f"  attacked/{i:04d}.png: {item['truth']!r} -> captioned {item['attacked_caption']!r}")
        uploads.append(DemoUpload(f"attacked/{i:04d}.png", str(attacked / "attacked" / f"{i:04d}.png")))
    return uploads, threshold_file


def _step(env: dict[str, str], title: str, *commands: list[str]) -> None:
    print(title)
    for args in commands:
        print(f"  $ streamdetect {' '.join(args)}")
        done = subprocess.run([sys.executable, "-m", "streamdetect.cli", *args], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise DemoError(f"`streamdetect {' '.join(args)}` failed (exit {done.returncode}):\n"
                            f"{done.stderr.strip()[-2000:]}")
        if args[0] == "calibrate":  # the fit is worth seeing; the other commands' output is not
            print("\n".join(f"    {line}" for line in done.stdout.splitlines()))


class DemoError(RuntimeError):
    """A preparation step failed; the message names the command and its error output."""
