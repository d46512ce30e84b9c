""".ci/run: installs Debian's dataset-fashion-mnist only when its files are
absent (apt-get update first), sets CI, then runs exactly the README's test
command. apt-get and python3 are stand-ins on PATH that log their calls."""

import os
import re
import stat
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_test_command():
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  [command] = re.findall(r"^python3 -m venv .venv && .*pytest -q$", text,
                         flags=re.M)
  return command


def test_ci_runs_exactly_the_readme_test_command():
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    lines = f.read().rstrip("\n").splitlines()
  assert lines[-1] == readme_test_command()


def _stub(folder, name, log):
  path = folder / name
  path.write_text(f"#!/bin/sh\n"
                  f"echo \"$(basename \"$0\") $* [CI=$CI]\" >> {log}\n"
                  f"[ \"$1\" = -m ] && [ \"$2\" = venv ] && "
                  f"mkdir -p \"$3/bin\" && cp \"$0\" \"$3/bin/pip\" && "
                  f"cp \"$0\" \"$3/bin/python\"\nexit 0\n")
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.slow
@pytest.mark.parametrize("present", [False, True])
def test_installs_the_package_only_when_the_files_are_absent(tmp_path,
                                                             present):
  if os.geteuid() != 0:
    pytest.skip("the stand-in apt-get is called through sudo when not root")
  bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
  bin_dir.mkdir()
  for name in ("apt-get", "python3"):
    _stub(bin_dir, name, log)
  files = tmp_path / "fmnist"
  if present:
    files.mkdir()
    (files / "train-images-idx3-ubyte.gz").write_bytes(b"")
  # A copy of the repository's .ci/run in a scratch tree, so the stand-in
  # venv lands there.
  (tmp_path / "repo" / ".ci").mkdir(parents=True)
  script = tmp_path / "repo" / ".ci" / "run"
  script.write_text(open(os.path.join(ROOT, ".ci", "run")).read())
  script.chmod(0o755)
  env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin",
             FMNIST_DIR=str(files))
  env.pop("CI", None)
  proc = subprocess.run([str(script)], capture_output=True, text=True,
                        env=env, timeout=60, check=False)
  assert proc.returncode == 0, proc.stderr
  calls = log.read_text().splitlines()
  apt = [c for c in calls if c.startswith("apt-get")]
  if present:
    assert not apt
  else:
    assert apt == ["apt-get -qq update [CI=1]",
                   "apt-get -qq install -y --no-install-recommends "
                   "dataset-fashion-mnist [CI=1]"]
  # CI is set for the tests, so the Fashion-MNIST ones cannot skip.
  assert calls[-3:] == ["python3 -m venv .venv [CI=1]",
                        "pip install -q -r requirements.txt [CI=1]",
                        "python -m pytest -q [CI=1]"]
