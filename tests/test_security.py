"""Issue 8 (security part): nothing read back is unpickled, and no secret lives in config files."""

import re

import yaml

from tests.conftest import REPO

SOURCE_DIRS = ("rec_core", "rec_assets", "feature_repo", "scripts")
FORBIDDEN = {
    r"^\s*(import|from)\s+(pickle|cPickle|dill|cloudpickle|joblib)\b": "pickle-based serialization",
    r"\bpickle\.loads?\(": "unpickling",
    r"read_pickle\(|to_pickle\(": "pandas pickles",
    r"allow_pickle\s*=\s*True": "numpy pickles",
    r"yaml\.load\((?![^)]*SafeLoader)": "yaml.load without SafeLoader",
}


def _sources():
    for directory in SOURCE_DIRS:
        yield from sorted((REPO / directory).rglob("*.py"))


def test_no_pickle_or_unsafe_loads():
    problems = []
    for path in _sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for pattern, why in FORBIDDEN.items():
                if re.search(pattern, line):
                    problems.append(f"{path.relative_to(REPO)}:{number}: {why}: {line.strip()}")
    assert not problems, "\n".join(problems)


def test_torch_load_always_restricts_to_weights():
    problems = []
    for path in _sources():
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start(): text.find(")", match.start()) + 1]
            if "weights_only=True" not in call:
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{path.relative_to(REPO)}:{line}: {call}")
    assert not problems, "\n".join(problems)


def _secret_values(node, path=""):
    """(path, value) of every password/secret/token key whose value is not an env reference."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if re.search(r"password|secret|token", str(key), re.I) and not (isinstance(value, dict) and "env" in value):
                yield here, value
            else:
                yield from _secret_values(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _secret_values(value, f"{path}[{i}]")


def test_instance_config_holds_no_secrets():
    for name in ("dagster.yaml", "deploy/dagster-postgres.yaml"):
        config = yaml.safe_load((REPO / name).read_text())
        assert not list(_secret_values(config)), name
    postgres = yaml.safe_load((REPO / "deploy/dagster-postgres.yaml").read_text())["storage"]["postgres"]["postgres_db"]
    assert postgres["password"] == {"env": "DAGSTER_PG_PASSWORD"}


def test_ui_binds_to_loopback_by_default():
    scripts = " ".join(p.read_text() for p in (REPO / "scripts").glob("*.sh"))
    assert "0.0.0.0" not in scripts and "0.0.0.0" not in (REPO / "README.md").read_text()
