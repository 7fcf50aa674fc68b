"""The course: every lesson in examples/ runs with --quick, prints what it measured, writes its figure,
and has a page in the site that shows that figure."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p.stem for p in (ROOT / "examples").glob("[0-9][0-9]_*.py"))


def test_the_course_has_its_lessons_and_an_index_of_them():
    assert len(LESSONS) >= 12
    index = (ROOT / "docs" / "course" / "index.md").read_text()
    for name in LESSONS:
        assert f"({name}.md)" in index, f"docs/course/index.md does not list {name}"
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(f"course/{name}.md" in nav for name in LESSONS)


@pytest.mark.parametrize("name", LESSONS)
def test_a_lesson_runs_quick_and_writes_its_figure(name, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    measured = [line for line in result.stdout.splitlines() if re.match(r"^[\w ().,/=-]+: \S", line)]
    assert len(measured) >= 3, f"{name} printed too little:\n{result.stdout}"
    page = (ROOT / "docs" / "course" / f"{name}.md").read_text()
    assert f"(figures/{name}.png)" in page and (ROOT / "docs" / "course" / "figures" / f"{name}.png").exists()
