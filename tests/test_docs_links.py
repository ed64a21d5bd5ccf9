"""The documentation stands alone: no path outside the repository, and every relative link points at a file in it."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
# Paths of the machine the project was developed on, or of files beside the repository, that a reader lacks.
OUTSIDE = re.compile(r"\.\./shared|/work/|shared/papers|papers/[\w.-]+\.txt|/tmp/")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_the_pattern_finds_what_it_must():
    assert OUTSIDE.search("see `../shared/DESIGN.md`") and OUTSIDE.search("`papers/auto-das-eccv2024.txt`")
    assert not OUTSIDE.search("[arXiv:2504.20080](https://arxiv.org/abs/2504.20080)")
    assert LINK.findall("[ops](ops.md) and [x](https://a.b/c) [t](train.md#flags)") == [
        "ops.md", "https://a.b/c", "train.md#flags"]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_no_path_outside_the_repository(page):
    found = [f"{page.name}:{number}: {line.strip()}" for number, line in enumerate(page.read_text().splitlines(), 1)
             if OUTSIDE.search(line)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_point_at_files_of_the_repository(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor of the same page
        path = (page.parent / target.split("#")[0]).resolve()
        if not (path.exists() and REPO in path.parents):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"
