"""The documents the code and configs cite exist in the repository, and the
README (a front page) reaches every docs/ page through links that resolve."""

import os
import re
import subprocess

import pytest

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


@pytest.mark.slow
def test_every_reference_md_mention_is_the_one_in_docs():
  assert os.path.isfile(os.path.join(REPO, REFERENCE))
  dangling = []
  for path in _tracked_text_files():
    text = open(os.path.join(REPO, path), encoding="utf-8").read()
    for match in re.finditer(r"[\w./-]*REFERENCE\.md", text):
      if path == REFERENCE:
        continue
      # A markdown link's target is relative to its page (a page in docs/
      # links it by its file name); every other mention names the path.
      named = match.group(0)
      if path.endswith(".md") and text[match.start() - 2:
                                       match.start()] == "](":
        named = os.path.normpath(os.path.join(os.path.dirname(path), named))
      if named != REFERENCE:
        dangling.append(f"{path}: {match.group(0)}")
  assert not dangling, dangling


@pytest.mark.slow
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


def _markdown_pages():
  """README.md and every page under docs/ (repository-relative paths)."""
  docs = sorted(os.path.join("docs", n)
                for n in os.listdir(os.path.join(REPO, "docs"))
                if n.endswith(".md"))
  return ["README.md"] + docs


def _headings(path):
  """The anchors of `path`'s headings (outside code blocks)."""
  text = open(os.path.join(REPO, path), encoding="utf-8").read()
  text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
  return {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def _links(path):
  """(target file, anchor or None) of every relative link in `path`."""
  text = open(os.path.join(REPO, path), encoding="utf-8").read()
  text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
  out = []
  for target in re.findall(r"\]\(([^)\s]+)\)", text):
    if re.match(r"^[a-z]+:", target):
      continue
    file, _, anchor = target.partition("#")
    file = os.path.normpath(os.path.join(os.path.dirname(path), file)
                            ) if file else path
    out.append((file, anchor or None))
  return out


def test_every_link_in_the_readme_and_docs_resolves():
  broken = []
  for page in _markdown_pages():
    for file, anchor in _links(page):
      if not os.path.exists(os.path.join(REPO, file)):
        broken.append(f"{page}: {file} does not exist")
      elif anchor and (not file.endswith(".md") or
                       anchor not in _headings(file)):
        broken.append(f"{page}: {file}#{anchor} is no heading there")
  assert not broken, broken


def test_the_readme_links_every_docs_page_and_section():
  linked = _links("README.md")
  for page in _markdown_pages()[1:]:
    assert page in {f for f, _ in linked}, f"README.md does not link {page}"
    # Each page's top-level sections (moved from the README) by anchor.
    text = open(os.path.join(REPO, page), encoding="utf-8").read()
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    if page == REFERENCE:
      continue
    for heading in re.findall(r"^## (.+)$", text, re.M):
      assert (page, _anchor(heading)) in linked, (
          f"README.md does not link {page}#{_anchor(heading)}")


def test_the_readme_is_a_front_page():
  lines = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  assert len(lines.splitlines()) <= 300
