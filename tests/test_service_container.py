"""The `Containerfile`, read as text: what can be checked without a container engine.

No image is built or run by these tests: this machine has the docker CLI but no daemon, and no
podman or buildah. They check the file's structure instead: a multi-stage build whose compiler
stays in the build stage, a final stage that runs as an unprivileged user, sources that exist,
and a documented service command that the service's own argument parser accepts. The service
process itself, started with those arguments (`--host 0.0.0.0` and a token), is tested in
`tests/test_service.py`.
"""

import re
import shlex
from dataclasses import dataclass, field

from rec_core.service.__main__ import build_parser
from tests.conftest import REPO

CONTAINERFILE = REPO / "Containerfile"
COMPILER_PACKAGES = ("build-essential", "gcc", "g++", "clang")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments), continuations joined

    def arguments(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


def read_stages() -> tuple[str, list[Stage]]:
    """(the leading comment as one line, stages) of the Containerfile."""
    lines = CONTAINERFILE.read_text().splitlines()
    leading = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    header = " ".join(line.lstrip("# ").removesuffix("\\") for line in leading)
    stages = []
    for line in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines():  # continuation lines joined
        if line.startswith("#") or not line.strip():
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            words = arguments.split()
            stages.append(Stage(words[0], words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        else:
            stages[-1].instructions.append((instruction.upper(), arguments.strip()))
    return header, stages


def test_the_compiler_stays_in_the_build_stage():
    _, stages = read_stages()
    assert len(stages) >= 2, "expected a multi-stage build"
    build, final = stages[0], stages[-1]
    assert any(package in run for run in build.arguments("RUN") for package in COMPILER_PACKAGES)
    assert not any(package in run for run in final.arguments("RUN") for package in COMPILER_PACKAGES)
    copied = final.arguments("COPY")
    assert f"--from={build.name} /opt/venv /opt/venv" in copied  # only the built environment crosses over


def test_the_final_stage_runs_as_an_unprivileged_user():
    _, stages = read_stages()
    final = stages[-1]
    users = final.arguments("USER")
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith(("root:", "0:"))
    created = " ".join(final.arguments("RUN"))
    uid = re.search(rf"useradd\b[^&]*--uid (\d+)[^&]*\b{re.escape(users[-1])}\b", created)
    assert uid and int(uid.group(1)) != 0, "the USER must be created in the final stage with a non-zero uid"
    last_user = max(i for i, (name, _) in enumerate(final.instructions) if name == "USER")
    assert all(name != "RUN" for name, _ in final.instructions[last_user:]), "nothing may run as root after USER"


def test_every_copied_source_exists():
    _, stages = read_stages()
    for stage in stages:
        for arguments in stage.arguments("COPY"):
            if arguments.startswith("--from="):
                continue
            *sources, _destination = arguments.split()
            for source in sources:
                assert (REPO / source).exists(), f"Containerfile copies {source}, which is not in the repository"


def test_the_documented_service_command_is_one_the_service_accepts():
    documented, stages = read_stages()
    command = re.search(r"IMAGE\s+(python -m rec_core\.service [^(]+)", documented)
    assert command, "the header should show how to start the service from the image"
    words = shlex.split(command.group(1))
    args = build_parser().parse_args(words[3:])
    final = stages[-1]
    environment = " ".join(final.arguments("ENV"))
    assert f"REC_ARTIFACT_ROOT={args.root}" in environment  # the mounted root is the image's default
    assert str(args.port) in " ".join(final.arguments("EXPOSE")).split()
    assert args.host == "0.0.0.0" and "-e REC_SERVICE_TOKEN=" in documented  # a non-loopback bind needs the token
