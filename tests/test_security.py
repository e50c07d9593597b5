"""Issue 8 (security part): nothing read back is unpickled, no secret lives in config files, and no
id or name from the data becomes a file path without being hashed."""

import ast
import re

import pytest
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
            call = text[match.start() : text.find(")", match.start()) + 1]
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


# ---- ids and names never become file paths unhashed ------------------------------------------
DATA_NAME = re.compile(r"(^|_)(item|user|product|interaction|customer|review)s?_?(id|ids|name|names|title)$", re.I)
"""Variables, attributes and column keys holding ids or names that come from the data."""
HASHING_CALLS = {"id_hash", "image_filename", "image_link", "sha256", "sha1", "md5", "blake2b", "hexdigest"}
"""Calls whose result is safe in a path: the `rec_core.data.paths` helpers and digests."""
PATH_CALLS = {"join", "joinpath", "Path", "UPath", "PurePath", "as_path", "open", "with_name", "with_stem"}
FILE_NAME_LITERAL = re.compile(r"^[^\s]*(/|\.(png|jpe?g|webp|parquet|json|csv|npy|safetensors|txt|bin))[^\s]*$", re.I)


def _call_name(node: ast.Call) -> str:
    return node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")


def _data_names(node: ast.AST) -> list[str]:
    """Data ids/names read by an expression, ignoring anything passed through a hashing call."""
    if isinstance(node, ast.Call) and _call_name(node) in HASHING_CALLS:
        return []
    found = []
    if isinstance(node, ast.Name) and DATA_NAME.search(node.id):
        found.append(node.id)
    elif isinstance(node, ast.Attribute) and DATA_NAME.search(node.attr):
        found.append(node.attr)
    elif (
        isinstance(node, ast.Subscript)
        and isinstance(node.slice, ast.Constant)
        and DATA_NAME.search(str(node.slice.value))
    ):
        found.append(f"[{node.slice.value!r}]")
    for child in ast.iter_child_nodes(node):
        found += _data_names(child)
    return found


def _path_parts(node: ast.AST) -> list[ast.AST]:
    """The operands that become part of a file path if `node` builds one, else []."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        right = node.right  # `base / part`; arithmetic (`hits / len(item_ids)`) divides by numbers, not strings
        if isinstance(right, ast.Call) and _call_name(right) == "str":
            return list(right.args)
        return [right] if isinstance(right, (ast.Name, ast.Attribute, ast.Subscript, ast.JoinedStr)) else []
    if isinstance(node, ast.Call) and _call_name(node) in PATH_CALLS:
        function = node.func
        if _call_name(node) == "join":  # os.path.join, not str.join
            owner = function.value if isinstance(function, ast.Attribute) else None
            if not (
                isinstance(owner, ast.Attribute)
                and owner.attr == "path"
                or isinstance(owner, ast.Name)
                and owner.id in ("posixpath", "ntpath")
            ):
                return []
        return list(node.args)
    if isinstance(node, ast.JoinedStr):
        literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        if literal and FILE_NAME_LITERAL.match(literal):
            return [v for v in node.values if isinstance(v, ast.FormattedValue)]
    return []


def unhashed_paths(source: str, filename: str = "<source>") -> list[str]:
    """'file:line: names' for each line that builds a file path from a data id or name without hashing it.

    A path is being built by `base / x`, `os.path.join(..., x)`, `.joinpath(x)`, `Path(x)`, `open(x)`,
    `.with_name(x)`, or an f-string that looks like a file name (no spaces; a '/' or a file extension).
    """
    problems: dict[int, set[str]] = {}
    for node in ast.walk(ast.parse(source, filename)):
        names = {name for part in _path_parts(node) for name in _data_names(part)}
        if names:
            problems.setdefault(node.lineno, set()).update(names)
    return [f"{filename}:{line}: {', '.join(sorted(names))}" for line, names in sorted(problems.items())]


def test_no_id_or_name_becomes_a_path_unhashed():
    problems = []
    for path in _sources():
        problems += unhashed_paths(path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "paths built from unhashed ids or names:\n" + "\n".join(problems)


PLANTED_UNSAFE = {
    "f-string under a folder": 'image = folder / f"{item_id}.png"',
    "str() of an id": "target = root / str(user_id)",
    "os.path.join": 'path = os.path.join(base, "users", row.user_id)',
    "column value": 'out = Path(root, items["item_id"].iloc[0])',
    "product name file": 'save(image, f"images/{product_name.lower()}.png")',
    "joinpath": "directory.joinpath(names, interaction_id)",
    "open": 'open(f"/tmp/{review_title}.txt", "w")',
}
PLANTED_SAFE = {
    "hashed image file": "image = folder / image_filename(item_id)",
    "hashed id": 'target = root / f"{id_hash(user_id)}.parquet"',
    "image link": "link = image_link(row.item_id)",
    "digest": 'target = landed / f"{hashlib.sha256(item_id.encode()).hexdigest()}.parquet"',
    "message, not a path": 'raise ValueError(f"item {item_id} is missing from items.parquet")',
    "asset name": 'path = root / f"{name}.parquet"',
    "numeric division": "share = n_clicks / item_count",
    "division by a count of ids": "rate = hits / len(item_ids)",
    "str.join of ids in a message": 'raise ValueError(", ".join(item_ids) + " are unknown")',
}


@pytest.mark.parametrize("label", sorted(PLANTED_UNSAFE))
def test_planted_unhashed_path_is_flagged(label):
    assert unhashed_paths(PLANTED_UNSAFE[label]), label


@pytest.mark.parametrize("label", sorted(PLANTED_SAFE))
def test_hashed_or_unrelated_code_is_not_flagged(label):
    assert not unhashed_paths(PLANTED_SAFE[label]), label
