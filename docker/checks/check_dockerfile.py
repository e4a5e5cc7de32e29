"""docker/Dockerfile and its ignore file against the package and the tested environment."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

from _facts import FRAUD, ROOT, fraud_app, pyproject

#: Paths of a checkout that must never reach the build context.
LOCAL_STATE = (
    ".venv/bin/python",
    ".raylane/stack.json",
    "features/data/user_profiles.parquet",
    "platform/raylane/__pycache__/cli.cpython-311.pyc",
    ".git/HEAD",
    "tests/unit/test_config.py",
    "notebooks/fraud.ipynb",
    "bench/pipeline.py",
    "docker/compose.yaml",
)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if (not buf and not line) or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        word, _, rest = (buf + line).strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def base_image(text: str) -> str:
    """The FROM image with the defaults of the ARGs declared before it substituted."""
    args: dict[str, str] = {}
    for ins, rest in instructions(text):
        if ins == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k.strip()] = v.strip().strip("\"'")
        elif ins == "FROM":
            return re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], rest.split()[0]
            )
    raise ValueError("no FROM")


def copies(text: str) -> list[tuple[int, list[str], str]]:
    """(instruction index, sources without trailing '/', destination) of every COPY."""
    out = []
    for n, (ins, rest) in enumerate(instructions(text)):
        if ins == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            out.append((n, [p.rstrip("/") for p in parts[:-1]], parts[-1]))
    return out


def needed_paths() -> dict[str, str]:
    """Repository paths the image needs -> why (derived from pyproject.toml and fraud.yaml)."""
    pp = pyproject()
    return {
        "pyproject.toml": "the package metadata",
        "constraints.txt": "the pins",
        pp["project"]["readme"]: "pyproject.toml's readme",
        **{
            w: "the package source root"
            for w in pp["tool"]["setuptools"]["packages"]["find"]["where"]
        },
        fraud_app()["args"]["features"][
            "feast_repo"
        ]: "features.feast_repo of serve_configs/fraud.yaml",
        "models": "bootstrap hooks (models/<pipeline>/prepare.py)",
        FRAUD.parent.name: "the serve configs `serve run` reads",
    }


def install_inputs() -> list[str]:
    """What `pip install .` reads: metadata, pins, readme, source root."""
    pp = pyproject()
    return [
        "pyproject.toml",
        "constraints.txt",
        pp["project"]["readme"],
        *pp["tool"]["setuptools"]["packages"]["find"]["where"],
    ]


def dockerfile_problems(text: str) -> list[str]:
    import ray

    problems: list[str] = []
    base = base_image(text)
    m = re.fullmatch(
        r"rayproject/ray:(?P<ver>[0-9.]+)-(?P<py>py3\d+)-(?P<variant>cpu|gpu|cu\d+)", base
    )
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    if not m:
        problems.append(f"base image {base} is not rayproject/ray:<version>-py3XX-<cpu|gpu|cuXXX>")
    elif m["ver"] != ray.__version__:
        problems.append(
            f"base image has Ray {m['ver']}, the tested environment has {ray.__version__}"
        )
    elif m["py"] != py:
        problems.append(f"base image Python {m['py']}, the tested environment is {py}")
    elif m["variant"] != "cpu":
        problems.append(f"default variant is {m['variant']}, expected cpu (gpu via --build-arg)")

    ins = instructions(text)
    copy_at: dict[str, int] = {}
    for n, srcs, dst in copies(text):
        for src in srcs:
            copy_at.setdefault(src, n)
        same_name = len(srcs) == 1 and dst.rstrip("/") == srcs[0]
        if not (same_name or dst in ("./", ".")):
            problems.append(
                f"COPY {' '.join(srcs)} {dst}: keep repository paths (the commands use them)"
            )
    for path, why in needed_paths().items():
        if path not in copy_at:
            problems.append(f"{path} ({why}) is not copied")

    pip = [
        n
        for n, (i, rest) in enumerate(ins)
        if i == "RUN"
        and re.search(r"pip install\b[^&|;]*\s-c\s+constraints\.txt\b[^&|;]*\s\.(\s|$)", rest)
    ]
    if not pip:
        problems.append("no `RUN pip install -c constraints.txt .`")
    else:
        for path in install_inputs():
            if copy_at.get(path, len(ins)) > pip[0]:
                problems.append(f"{path} is not copied before the pip install that reads it")

    users = [rest for i, rest in ins if i == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image must run as a non-root USER")

    cmd = [rest for i, rest in ins if i == "CMD"]
    argv = json.loads(cmd[-1]) if cmd and cmd[-1].startswith("[") else []
    if argv[:2] != ["serve", "run"] or len(argv) < 3 or not (ROOT / argv[2]).is_file():
        problems.append(
            f"CMD {argv or cmd} is not `serve run <a serve config of the repo>` (exec form)"
        )
    elif argv[2].split("/")[0] not in copy_at:
        problems.append(f"CMD runs {argv[2]}, which the image does not copy")
    return problems


# ---------------------------------------------------------------------------- ignore file


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """Docker's ignore patterns (Go filepath.Match plus `**`), in order, as (negated, regex)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = (line[1:] if neg else line).strip().strip("/")
        rx, i = "", 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] in "*?":
                rx, i = rx + ("[^/]*" if pat[i] == "*" else "[^/]"), i + 1
            elif pat[i] == "[":
                j = pat.index("]", i)
                rx, i = rx + pat[i : j + 1], j + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        rules.append((neg, re.compile(rx + r"\Z")))
    return rules


def ignored(rules: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """Whether `path` is left out of the context: the last rule matching it or a parent wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    out = False
    for neg, rx in rules:
        if any(rx.match(p) for p in prefixes):
            out = not neg
    return out


def tracked_files(under: str) -> list[str]:
    """Files of the repository under `under` (git's list; a walk when git is unavailable)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--", under],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    if out:
        return out
    base = ROOT / under
    files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
    rel = [p.relative_to(ROOT) for p in files]
    return [
        str(p) for p in rel if "__pycache__" not in p.parts and p.parts[:2] != ("features", "data")
    ]


def dockerignore_problems(ignore_text: str, dockerfile_text: str) -> list[str]:
    rules = ignore_rules(ignore_text)
    problems = []
    for _n, srcs, _dst in copies(dockerfile_text):
        for src in srcs:
            files = tracked_files(src)
            if not files:
                problems.append(f"COPY {src}: no such files in the repository")
            out = [f for f in files if ignored(rules, f)]
            if out:
                problems.append(f"COPY {src}: the ignore file leaves out {out[:5]}")
    for path in LOCAL_STATE:
        if not ignored(rules, path):
            problems.append(f"{path} would be sent to the builder")
    return problems
