#!/usr/bin/env python3
"""Static checks for the services' Dockerfiles (no Docker engine needed).

For each Dockerfile: every base image is pinned (an explicit version tag or a digest, never
``latest`` or a bare major version); the final stage runs as a non-root USER, declares a
HEALTHCHECK and an ENTRYPOINT; no ENV/ARG carries a secret-looking value and no key
material appears anywhere; ``ADD`` never fetches URLs and nothing is piped from the network
into a shell; every ``COPY`` source exists in the build context (the repository root) and is
not excluded by ``.dockerignore``.

Usage: ``python deploy/tools/lint_dockerfiles.py [Dockerfile ...]`` (default: every
``services/*/Dockerfile``); exits 1 and prints one line per problem.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|PEPPER|CREDENTIAL)", re.I
)
SECRET_TEXT = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),  # Hugging Face token
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub token
    re.compile(r"\bsk-[A-Za-z0-9]{20,}\b"),  # OpenAI-style key
]
PINNED_TAG = re.compile(r"\d+\.\d+")
ROOT_USERS = {"root", "0", "0:0", "root:root"}


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    image: str
    alias: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Split a Dockerfile into instructions (continuations joined) and build stages."""
    instructions: list[Instruction] = []
    buffer = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        buffer = ""
    if buffer:
        keyword, _, args = buffer.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))

    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], alias, instruction.line))
        elif stages:
            stages[-1].instructions.append(instruction)
    return instructions, stages


def _arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """Global ARG defaults (those before the first FROM), used to resolve FROM lines."""
    defaults: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, value = instruction.args.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def _substitute(value: str, defaults: dict[str, str]) -> str:
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: defaults.get(m.group(1), m.group(0)), value
    )


def _key_values(args: str) -> list[tuple[str, str]]:
    """ENV/ARG/LABEL arguments as (name, value) pairs, for both `K=V K2=V2` and `K V`."""
    try:
        words = shlex.split(args, posix=True)
    except ValueError:
        words = args.split()
    if words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    return [(w.partition("=")[0], w.partition("=")[2]) for w in words if "=" in w or w]


def check_image_pinned(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    _, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    if not tag:
        return f"base image {image!r} has no tag (implicitly latest): pin a version"
    if tag == "latest":
        return f"base image {image!r} uses 'latest': pin a version"
    if "$" in tag:
        return f"base image {image!r} has an unresolved variable in its tag"
    if not PINNED_TAG.search(tag):
        return (
            f"base image {image!r}: tag {tag!r} is not a specific version (want e.g. 3.11.14-slim)"
        )
    return None


def load_dockerignore(root: Path) -> list[tuple[bool, str]]:
    path = root / ".dockerignore"
    rules: list[tuple[bool, str]] = []
    if not path.is_file():
        return rules
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, line.lstrip("!").strip("/")))
    return rules


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regular expression."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def ignored(relative: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; excluding a folder excludes its content."""
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, pattern in rules:
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negate
    return result


def lint(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """Problems found in one Dockerfile, each prefixed with ``file:line``."""
    text = path.read_text()
    instructions, stages = parse(text)
    where = path.relative_to(root) if path.is_relative_to(root) else path
    problems: list[str] = []

    def report(line: int, message: str) -> None:
        problems.append(f"{where}:{line}: {message}")

    if not stages:
        report(1, "no FROM instruction")
        return problems

    defaults = _arg_defaults(instructions)
    aliases: set[str] = set()
    for stage in stages:
        image = _substitute(stage.image, defaults)
        if image not in aliases and image != "scratch":
            problem = check_image_pinned(image)
            if problem:
                report(stage.line, problem)
        if stage.alias:
            aliases.add(stage.alias)

    for pattern in SECRET_TEXT:
        for match in pattern.finditer(text):
            report(text[: match.start()].count("\n") + 1, "text that looks like a credential")

    rules = load_dockerignore(root)
    for instruction in instructions:
        if instruction.keyword in ("ENV", "ARG"):
            for name, value in _key_values(instruction.args):
                if SECRET_NAME.search(name) and value.strip().strip('"'):
                    report(
                        instruction.line,
                        f"{instruction.keyword} {name} bakes a secret into the image",
                    )
        if instruction.keyword == "ADD" and re.search(r"\bhttps?://", instruction.args):
            report(instruction.line, "ADD of a URL: download in a RUN step with a checksum")
        if instruction.keyword == "RUN" and re.search(
            r"(curl|wget)[^|]*\|\s*(ba|z)?sh\b", instruction.args
        ):
            report(instruction.line, "network download piped into a shell")
        if instruction.keyword in ("COPY", "ADD") and "--from=" not in instruction.args:
            words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
            if words and words[0].startswith("["):
                continue
            for source in words[:-1]:
                relative = (source[2:] if source.startswith("./") else source).rstrip("/") or "."
                if re.search(r"\.env(\.|$)", relative):
                    report(instruction.line, f"COPY of {source}: environment files hold secrets")
                if any(ch in relative for ch in "*?["):
                    continue
                if not (root / relative).exists():
                    report(
                        instruction.line,
                        f"COPY source {source} does not exist in the build context",
                    )
                elif relative != "." and ignored(relative, rules):
                    report(instruction.line, f"COPY source {source} is excluded by .dockerignore")

    final = stages[-1]
    users = [i for i in final.instructions if i.keyword == "USER"]
    if not users:
        report(final.line, "final stage has no USER: the container would run as root")
    elif users[-1].args.strip() in ROOT_USERS:
        report(users[-1].line, "final stage runs as root")
    healthchecks = [i for i in final.instructions if i.keyword == "HEALTHCHECK"]
    if not healthchecks or healthchecks[-1].args.strip().upper() == "NONE":
        report(final.line, "final stage has no HEALTHCHECK")
    if not any(i.keyword == "ENTRYPOINT" for i in final.instructions):
        report(final.line, "final stage has no ENTRYPOINT")
    return problems


def main(argv: list[str]) -> int:
    paths = [Path(p).resolve() for p in argv] or sorted(REPO_ROOT.glob("services/*/Dockerfile"))
    problems = [problem for path in paths for problem in lint(path)]
    for problem in problems:
        print(problem)
    print(f"{len(paths)} Dockerfile(s) checked, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
