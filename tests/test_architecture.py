"""The layering holds: `rec_core` never needs Dagster, and the Dagster configs take the library's defaults.

Both tests find what they check by themselves (every module under `rec_core`, every `dg.Config`
class under `rec_assets`), so a new module or config class is checked without editing them.
"""

import ast
import inspect
import json
import pkgutil
import subprocess
import sys
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path

import rec_core

REPO = Path(__file__).resolve().parents[1]

_IMPORT_ALL_WITHOUT_DAGSTER = """
import importlib, importlib.abc, json, pkgutil, sys

class BlockDagster(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "dagster" or name.startswith("dagster_"):
            raise ImportError(f"{name} is blocked: rec_core must not need Dagster")
        return None

sys.meta_path.insert(0, BlockDagster())
import rec_core

failures, imported = {}, []
for module in pkgutil.walk_packages(rec_core.__path__, "rec_core."):
    try:
        importlib.import_module(module.name)
        imported.append(module.name)
    except Exception as exc:  # every failing module is reported, not only the first
        failures[module.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"imported": imported, "failures": failures,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("dagster", "rec_assets"))}))
"""


def test_every_rec_core_module_imports_without_dagster():
    """Each module under rec_core imports in a process where `import dagster` fails, and none names Dagster or
    rec_assets in any import, even a lazy one inside a function (which importing the module would not run)."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL_WITHOUT_DAGSTER], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failures"] == {}
    expected = {m.name for m in pkgutil.walk_packages(rec_core.__path__, "rec_core.")}
    assert set(report["imported"]) == expected and len(expected) > 40
    assert {"rec_core.serving", "rec_core.data.loaders", "rec_core.bench.quality"} <= expected
    assert report["loaded"] == []

    lazy = []
    for path in sorted((REPO / "rec_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            lazy += [
                f"{path.relative_to(REPO)}: {name}"
                for name in names
                if name.split(".")[0] in ("dagster", "rec_assets") or name.startswith("dagster_")
            ]
    assert lazy == []


# ---- Dagster config defaults -------------------------------------------------------------------
@dataclass
class Mirror:
    """Where a Dagster config's defaults come from: `sources` (library dataclasses or functions, whose field or
    parameter of the same name, or `renames[field]`, holds the default) and `own` (fields with no library
    counterpart, each with the reason)."""

    sources: tuple = ()
    renames: dict = field(default_factory=dict)
    own: dict = field(default_factory=dict)


def _mirrors() -> dict[str, Mirror]:
    from rec_core.data.sources import load_source
    from rec_core.data.splits import split_interactions
    from rec_core.device import resolve_device
    from rec_core.encoders import ClipEncoder
    from rec_core.encoders.text import TextEncoderConfig
    from rec_core.generation.generate_images import ImageGenerationConfig
    from rec_core.generation.synthetic import GeneratorConfig
    from rec_core.index import IndexConfig
    from rec_core.models import TwoTowerConfig
    from rec_core.preprocessing import PreprocessingConfig
    from rec_core.release import publish_release, rollback
    from rec_core.serving import Recommender
    from rec_core.training import TrainingConfig
    from rec_core.tuning import TuningConfig

    empty_means_default = "empty: the library's own default (an environment variable, else a built-in value)"
    return {
        "DatasetConfig": Mirror((GeneratorConfig, load_source), {"format": "fmt"}),
        "InteractionsConfig": Mirror(own={"landing_files": "the files of one ingestion, filled in by the sensor"}),
        "SplitConfig": Mirror((split_interactions,)),
        "TwoTowerTrainingConfig": Mirror(
            (TrainingConfig, TwoTowerConfig, PreprocessingConfig, TuningConfig),
            {"tuning_trials": "trials", "tuning_timeout_s": "timeout_s"},
            {"use_text": "whether the asset feeds the text tables", "use_images": "whether it feeds the CLIP table"},
        ),
        "ProductImagesConfig": Mirror((ImageGenerationConfig,), own={"gallery_size": "thumbnails in the UI"}),
        "ItemIndexConfig": Mirror((IndexConfig,)),
        "UserRecommendationsConfig": Mirror(
            (Recommender.recommend_batch,),
            own={"k": "the stored table keeps 50 per user, more than the 10 a request returns by default"},
        ),
        "ServingReleaseConfig": Mirror((publish_release,)),
        "RollbackConfig": Mirror((rollback,)),
        "ArtifactStore": Mirror(own={"root": empty_means_default}),
        "TableIOManager": Mirror(own={"root": empty_means_default}),
        "DeviceResource": Mirror((resolve_device,)),
        "TextEncoderResource": Mirror((TextEncoderConfig,)),
        "ClipEncoderResource": Mirror((ClipEncoder.__init__,), own={"model": empty_means_default}),
        "FeastStoreResource": Mirror(
            own={"profile": empty_means_default, "repo_path": empty_means_default, "data_dir": empty_means_default}
        ),
    }


def _library_default(source, name: str):
    """The default `source` (a dataclass or a function) gives `name`, or MISSING when it has none."""
    if is_dataclass(source):
        found = next((f for f in fields(source) if f.name == name), None)
        if found is None:
            return MISSING
        return found.default if found.default is not MISSING else found.default_factory()
    parameter = inspect.signature(source).parameters.get(name)
    return MISSING if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _dagster_config_classes() -> dict[str, type]:
    import importlib

    import dagster as dg

    import rec_assets

    found = {}
    for module in pkgutil.walk_packages(rec_assets.__path__, "rec_assets."):
        for name, value in vars(importlib.import_module(module.name)).items():
            if inspect.isclass(value) and issubclass(value, dg.Config) and value.__module__.startswith("rec_assets"):
                found[name] = value
    return found


def test_every_dagster_config_default_equals_the_library_default():
    classes = _dagster_config_classes()
    mirrors = _mirrors()
    assert sorted(classes) == sorted(mirrors), "a Dagster config class without a Mirror entry here, or a stale entry"
    checked = 0
    for name, cls in classes.items():
        mirror = mirrors[name]
        assert set(mirror.own) <= set(cls.model_fields), (
            f"{name}: stale own fields {set(mirror.own) - set(cls.model_fields)}"
        )
        for field_name, info in cls.model_fields.items():
            if field_name in mirror.own:
                continue
            ours = info.get_default(call_default_factory=True)
            library = [
                (source, _library_default(source, mirror.renames.get(field_name, field_name)))
                for source in mirror.sources
            ]
            library = [(source, value) for source, value in library if value is not MISSING]
            assert library, f"{name}.{field_name}: no library default found; name its source or list it as own"
            for source, value in library:
                assert ours == value, f"{name}.{field_name} = {ours!r}, but {source.__qualname__} says {value!r}"
                checked += 1
    assert checked >= 40
