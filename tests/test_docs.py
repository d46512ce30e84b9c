"""The documents the code and configs cite exist in the repository."""

import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = "docs/REFERENCE.md"


def _tracked_text_files():
  out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True,
                       text=True, check=True).stdout.split()
  return [p for p in out
          if p.endswith((".py", ".gin", ".md", ".sh", ".cfg", ".toml", ".txt"))
          and os.path.isfile(os.path.join(REPO, p))]


def _anchor(heading):
  """GitHub's anchor for a markdown heading."""
  slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return slug.replace(" ", "-")


def test_every_reference_md_mention_is_the_one_in_docs():
  assert os.path.isfile(os.path.join(REPO, REFERENCE))
  dangling = []
  for path in _tracked_text_files():
    text = open(os.path.join(REPO, path), encoding="utf-8").read()
    for match in re.finditer(r"[\w./-]*REFERENCE\.md", text):
      if path == REFERENCE:
        continue
      if match.group(0) != REFERENCE:
        dangling.append(f"{path}: {match.group(0)}")
  assert not dangling, dangling


def test_links_into_the_reference_resolve():
  reference = open(os.path.join(REPO, REFERENCE), encoding="utf-8").read()
  anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", reference, re.M)}
  links = []
  for path in _tracked_text_files():
    text = open(os.path.join(REPO, path), encoding="utf-8").read()
    links += re.findall(r"REFERENCE\.md#([\w-]+)", text)
  links += re.findall(r"\]\(#([\w-]+)\)", reference)  # its own contents line
  assert links
  assert not [a for a in links if a not in anchors], sorted(anchors)


def test_files_the_reference_names_exist():
  reference = open(os.path.join(REPO, REFERENCE), encoding="utf-8").read()
  named = set(re.findall(r"`((?:gin|mwn_tf)/[\w./]+)`", reference))
  assert "gin/base_noise_wrn28_10.gin" in named
  assert not [p for p in named if not os.path.exists(os.path.join(REPO, p))]
