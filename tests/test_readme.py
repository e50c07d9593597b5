"""The README stays true: two set-up commands that exist, and a fault table backed by real tests."""

import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README has no '{title}' section"
    return match.group(1)


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"```bash\n(.*?)```", _section("Set up"), re.S)
    assert [c.strip() for c in commands] == ["bash scripts/run_main.sh", "bash scripts/test.sh"]
    for command in commands:
        assert (REPO / command.split()[1]).exists()
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_every_fault_row_names_a_test_file_that_exists_and_every_fault_suite_is_listed():
    rows = [line for line in _section("Reliability").splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 15
    named = set()
    for row in rows:
        files = re.findall(r"(test_[a-z_]+\.py)", row.split("|")[-2])
        assert files, row
        named.update(files)
    for name in named:
        assert (REPO / "tests" / name).exists(), name
    fault_suites = {p.name for p in (REPO / "tests").glob("test_faults*.py")}
    assert fault_suites <= named, fault_suites - named
