"""README.md and docs/*.md stay true: short README, links, paths, module names, commands, transcripts.

Each check is a small function over a document's text, run on the real documents (which
must pass) and on a made-up bad sample (which must fail), so no check passes vacuously:

    README.md at most 250 lines, every docs/*.md linked from it
    docs/how-it-works.md's package tree                -> the folders and modules of graphfix/
    relative links     -> an existing file (and heading, for #anchors)
    graphfix/..., tests/..., scripts/... paths          -> exist in the repo
    graphfix.x.y dotted names                          -> import (module, or attribute of one)
    `python -m graphfix ...` lines                     -> graphfix.cli's parsers accept them
    `.venv/bin/python scripts/X.py --flag` lines       -> X.py defines --flag
    the quick-start commands                           -> what .ci/run and scripts/ run
    transcripts (README's demo, <!-- transcript --> blocks) -> the commands, run, print them
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
ALL_DOCS = [README, *DOCS]
MAX_README_LINES = 250
QUICK_START = ("bash scripts/demo.sh", "bash scripts/test.sh")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _fenced_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(line index of the opening fence, info string, lines) of every ``` block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("```"):
            start, info, body = i, lines[i][3:].strip(), []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append((start, info, body))
        i += 1
    return blocks


def _prose(text: str) -> str:
    """The text without its fenced code blocks (links and headings live outside them)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return "\n".join(out)


# ---------------------------------------------------------------------------- links

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(text).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(doc: Path, text: str) -> list[str]:
    """Relative links in `text` (a file at `doc`) whose target file or heading does not exist."""
    bad = []
    for target in LINK.findall(_prose(text)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    return bad


@pytest.mark.parametrize("doc", ALL_DOCS, ids=_rel)
def test_relative_links_resolve(doc):
    assert broken_links(doc, doc.read_text()) == []


def test_link_check_can_fail(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n")
    doc = tmp_path / "doc.md"
    text = ("[ok](there.md) [ok](there.md#a-heading) [web](https://example.com)\n"
            "[gone](missing.md) [no anchor](there.md#nowhere)\n```\n[in code](ignored.md)\n```\n")
    bad = broken_links(doc, text)
    assert len(bad) == 2 and "missing.md" in bad[0] and "#nowhere" in bad[1]


# ----------------------------------------------------------------------- README size

def readme_problems(text: str, docs: list[str]) -> list[str]:
    problems = []
    if len(text.splitlines()) > MAX_README_LINES:
        problems.append(f"{len(text.splitlines())} lines, more than {MAX_README_LINES}")
    links = set(LINK.findall(_prose(text)))
    problems += [f"{doc} is not linked from the README" for doc in docs
                 if not any(link.partition("#")[0] == doc for link in links)]
    return problems


def test_readme_is_short_and_links_every_doc():
    assert readme_problems(README.read_text(), [_rel(d) for d in DOCS]) == []
    assert DOCS, "docs/*.md is where the depth goes"


def test_readme_check_can_fail():
    assert readme_problems("line\n" * 251, []) == [f"251 lines, more than {MAX_README_LINES}"]
    assert readme_problems("[x](docs/a.md)\n", ["docs/a.md", "docs/b.md"]) == ["docs/b.md is not linked from the README"]


# ----------------------------------------------------------------------- repo paths

REPO_PATH = re.compile(r"(?<![\w/.{}<-])((?:graphfix|tests|scripts)/[\w./-]*)")


def repo_paths(text: str) -> set[str]:
    """graphfix/..., tests/..., scripts/... paths named in the text (not `{node}/graphfix/...`)."""
    return {m.rstrip(".") for m in REPO_PATH.findall(text)}


def missing_paths(text: str, root: Path = REPO) -> list[str]:
    return sorted(p for p in repo_paths(text) if not (root / p).exists())


@pytest.mark.parametrize("doc", ALL_DOCS, ids=_rel)
def test_named_paths_exist(doc):
    text = doc.read_text()
    assert missing_paths(text) == []


def test_every_doc_names_real_paths():
    names = set().union(*(repo_paths(d.read_text()) for d in ALL_DOCS))
    assert {"graphfix/cudnn/reference.py", "tests/tools/test_extract.py"} <= names, sorted(names)


def test_path_check_can_fail():
    text = ("see `graphfix/resolve.py`, graphfix/cudnn/layout.py, `tests/test_tflite.py` and tests/builders/.\n"
            "Node rnn/graphfix/layer0_fw_kernel and {node}/graphfix/unpack_params are names, not paths.\n")
    assert missing_paths(text) == ["graphfix/resolve.py", "tests/test_tflite.py"]


# ------------------------------------------------------------------ package tree

def tree_entries(lines: list[str]) -> set[str]:
    """Paths of a tree drawn by indentation (`graphfix/`, `  cudnn/`, `    layout.py  what it is`)."""
    stack: list[tuple[int, str]] = []
    out = set()
    for line in lines:
        if not line.strip():
            continue
        indent, name = len(line) - len(line.lstrip()), line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (stack[-1][1] if stack else "") + name
        out.add(path)
        if name.endswith("/"):
            stack.append((indent, path))
    return out


def package_files(root: Path) -> set[str]:
    """graphfix/'s folders and modules (a subpackage's __init__.py goes with its folder)."""
    out = {"graphfix/"}
    for path in (root / "graphfix").rglob("*"):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root).as_posix()
        if path.is_dir() and any(path.rglob("*.py")):
            out.add(rel + "/")
        elif path.suffix == ".py" and (path.name != "__init__.py" or path.parent == root / "graphfix"):
            out.add(rel)
    return out


def tree_problems(tree: set[str], files: set[str]) -> list[str]:
    return ([f"{p}: in the tree, not on disk" for p in sorted(tree - files)]
            + [f"{p}: on disk, not in the tree" for p in sorted(files - tree)])


def test_package_tree_matches_the_package():
    ((_, body),) = marked_blocks((REPO / "docs" / "how-it-works.md").read_text(), "package-tree")
    assert tree_problems(tree_entries(body), package_files(REPO)) == []


def test_package_tree_check_can_fail(tmp_path):
    for rel in ("graphfix/__init__.py", "graphfix/api.py", "graphfix/cudnn/__init__.py", "graphfix/cudnn/layout.py",
                "graphfix/new.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    tree = tree_entries(["graphfix/", "  __init__.py   lazy", "  api.py        entry points", "  cudnn/",
                         "    layout.py   buffer", "    gone.py     removed", "  io/"])
    assert tree_problems(tree, package_files(tmp_path)) == [
        "graphfix/cudnn/gone.py: in the tree, not on disk", "graphfix/io/: in the tree, not on disk",
        "graphfix/new.py: on disk, not in the tree"]


# ------------------------------------------------------------------ dotted names

DOTTED = re.compile(r"(?<![\w./-])graphfix(?:\.[A-Za-z_]\w*)+")

RESOLVE = r"""
import importlib, json, sys
bad = {}
for name in json.loads(sys.argv[1]):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
            break
        except ModuleNotFoundError as exc:
            if exc.name != module_name:   # the module exists, one of its imports does not
                bad[name] = repr(exc)
                break
        except Exception as exc:          # noqa: BLE001
            bad[name] = repr(exc)
            break
    if name in bad:
        continue
    try:
        for attr in parts[i:]:
            obj = getattr(obj, attr)
    except AttributeError as exc:
        bad[name] = repr(exc)
print(json.dumps(bad))
"""


def dotted_names(text: str) -> set[str]:
    return set(DOTTED.findall(text))


def unresolvable(names: set[str]) -> dict[str, str]:
    """Names that neither import as a module nor are an attribute chain of one, with why."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", RESOLVE, json.dumps(sorted(names))], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dotted_names_import():
    names = set().union(*(dotted_names(d.read_text()) for d in ALL_DOCS))
    assert {"graphfix.convert", "graphfix.targets.tflite.convert_for_tflite"} <= names, sorted(names)
    assert unresolvable(names) == {}


def test_dotted_name_check_can_fail():
    text = ("`graphfix.tflite.convert_for_tflite` and graphfix.layout moved; graphfix.cudnn.layout.RnnSpec "
            "and graphfix.errors.GraphfixError did not; graphfix.cudnn.layout.NoSuchThing never existed.")
    names = dotted_names(text)
    assert names == {"graphfix.tflite.convert_for_tflite", "graphfix.layout", "graphfix.cudnn.layout.RnnSpec",
                     "graphfix.errors.GraphfixError", "graphfix.cudnn.layout.NoSuchThing"}
    assert sorted(unresolvable(names)) == ["graphfix.cudnn.layout.NoSuchThing", "graphfix.layout",
                                           "graphfix.tflite.convert_for_tflite"]


# ------------------------------------------------------------------ command lines

def graphfix_command_lines(text: str) -> list[str]:
    """The arguments of every `python -m graphfix ...` line in a code block, comments cut."""
    out = []
    for _, _, body in _fenced_blocks(text):
        for line in body:
            m = re.match(r"(?:\$ )?python -m graphfix\b(.*)", line)
            if m:
                out.append(m.group(1).split(" #", 1)[0].strip())
    return out


def rejected_command_lines(lines: list[str]) -> list[str]:
    """Lines that graphfix.cli's parsers (convert, inspect, extract) refuse."""
    from graphfix import cli
    parsers = {"inspect": cli.build_inspect_parser, "extract": cli.build_extract_parser}
    bad = []
    for line in lines:
        argv = shlex.split(line)
        build = parsers.get(argv[0]) if argv else None
        parser = build() if build else cli.build_parser()
        try:
            parser.parse_args(argv[1:] if build else argv)
        except SystemExit as exc:
            if exc.code != 0:  # --help exits 0
                bad.append(line)
    return bad


def test_graphfix_command_lines_parse(capsys):
    lines = [line for d in ALL_DOCS for line in graphfix_command_lines(d.read_text())]
    assert any(line.startswith("inspect ") for line in lines) and any("--target tflite" in line for line in lines)
    assert rejected_command_lines(lines) == []


def test_command_line_check_can_fail(capsys):
    text = "```\n$ python -m graphfix m.pb --verfiy\npython -m graphfix extract m.pb   # no -o\n```\n"
    lines = graphfix_command_lines(text)
    assert lines == ["m.pb --verfiy", "extract m.pb"]
    assert rejected_command_lines(lines) == lines


SCRIPT_LINE = re.compile(r"\.venv/bin/python (scripts/\w+\.py)(.*)")


def unknown_script_flags(text: str) -> list[str]:
    """`.venv/bin/python scripts/X.py --flag` lines in code blocks where X.py defines no --flag."""
    bad = []
    for _, _, body in _fenced_blocks(text):
        for line in body:
            m = SCRIPT_LINE.match(line)
            if m:
                script = REPO / m.group(1)
                source = script.read_text() if script.exists() else ""
                bad += [f"{m.group(1)} {flag}" for flag in re.findall(r"--[\w-]+", m.group(2).split("#", 1)[0])
                        if f'"{flag}"' not in source]
    return bad


def test_benchmark_command_lines_use_real_flags():
    texts = [d.read_text() for d in ALL_DOCS]
    assert any(SCRIPT_LINE.search(t) for t in texts)
    assert [bad for t in texts for bad in unknown_script_flags(t)] == []


def test_benchmark_flag_check_can_fail():
    text = "```\n.venv/bin/python scripts/bench_scaling.py [--quick] [--fast]   # --ignored\n```\n"
    assert unknown_script_flags(text) == ["scripts/bench_scaling.py --fast"]


# ------------------------------------------------------------------ quick start

def quick_start_problems(readme: str, ci_run: str, test_sh: str, demo_sh: str) -> list[str]:
    problems = []
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0] if "## Quick start" in readme else ""
    commands = [line.split("#", 1)[0].strip() for _, _, body in _fenced_blocks(section) for line in body
                if line.startswith("bash ")]
    if tuple(commands) != QUICK_START:
        problems.append(f"the Quick start commands are {commands}, not {list(QUICK_START)}")
    if "bash scripts/test.sh" not in ci_run.splitlines():
        problems.append(".ci/run does not run bash scripts/test.sh")
    for name, script in (("test.sh", test_sh), ("demo.sh", demo_sh)):
        if not any(line.startswith("bash scripts/setup.sh") for line in script.splitlines()):
            problems.append(f"scripts/{name} does not set up (bash scripts/setup.sh) as the README says")
    if not re.search(r"^exec \.venv/bin/python -m pytest .*\"\$@\"$", test_sh, re.M):
        problems.append("scripts/test.sh does not run pytest with the extra arguments")
    echoed = re.findall(r'^echo "\$ (.*)"$', demo_sh, re.M)
    run = [line.replace(".venv/bin/python", "python", 1) for line in demo_sh.splitlines()
           if line.startswith(".venv/bin/python -m graphfix ")]
    if not echoed or echoed != run:
        problems.append(f"scripts/demo.sh echoes {echoed} but runs {run}")
    shown = re.findall(r"^\$ (python -m graphfix .*)$", readme.split("<!-- demo-transcript -->", 1)[-1], re.M)[:1]
    if shown != echoed[:1]:
        problems.append(f"the README's demo transcript shows {shown}, demo.sh prints {echoed[:1]}")
    return problems


def _quick_start_files():
    return (README.read_text(), (REPO / ".ci" / "run").read_text(), (REPO / "scripts" / "test.sh").read_text(),
            (REPO / "scripts" / "demo.sh").read_text())


def test_quick_start_matches_ci_and_scripts():
    assert quick_start_problems(*_quick_start_files()) == []


def test_quick_start_check_can_fail():
    readme, ci_run, test_sh, demo_sh = _quick_start_files()
    assert quick_start_problems(readme.replace("bash scripts/test.sh", "bash scripts/tests.sh"), ci_run, test_sh,
                                demo_sh)
    assert quick_start_problems(readme, "python -m pytest\n", test_sh, demo_sh)
    assert quick_start_problems(readme, ci_run, test_sh.replace("pytest", "unittest"), demo_sh)
    assert quick_start_problems(readme, ci_run, test_sh, demo_sh.replace("--force\"", "-f\""))
    assert quick_start_problems(readme.replace("-o out/cudnn_lstm_gru_cpu.pb --force\n", "--force\n"), ci_run,
                                test_sh, demo_sh)


# ------------------------------------------------------------------ transcripts

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def same_line(want: str, got: str) -> bool:
    """Equal up to whitespace; integers exact, decimals within 1e-3, measured errors (1.2e-07) any."""
    if re.sub(r"\s+", "", NUMBER.sub("#", want)) != re.sub(r"\s+", "", NUMBER.sub("#", got)):
        return False
    for w, g in zip(NUMBER.findall(want), NUMBER.findall(got)):
        if "e" in w:
            continue
        if "." in w:
            if abs(float(w) - float(g)) > 1e-3:
                return False
        elif w != g:
            return False
    return True


def transcript_matches(want: list[str], got: list[str]) -> bool:
    """`want` (a transcript; a line `...` stands for any number of lines) against `got`."""
    if not want:
        return not got
    if want[0].strip() == "...":
        return any(transcript_matches(want[1:], got[i:]) for i in range(len(got) + 1))
    return bool(got) and same_line(want[0], got[0]) and transcript_matches(want[1:], got[1:])


def test_transcript_matching_can_fail():
    got = ["converted 3 op(s)", "  op a: max abs error 2.49e-07", "  op b", "scores: [ 0.3055  -0.1159]"]
    assert transcript_matches(["converted 3 op(s)", "...", "scores: [0.30551 -0.1159]"], got)
    assert transcript_matches(["converted 3 op(s)", "  op a: max abs error 9.99e-08", "...",
                               "scores: [ 0.3055 -0.1159]"], got)
    assert not transcript_matches(["converted 4 op(s)", "..."], got)
    assert not transcript_matches(["converted 3 op(s)", "...", "scores: [ 0.4055  -0.1159]"], got)
    assert not transcript_matches(["converted 3 op(s)", "  op a: max abs error 2.49e-07"], got)


def _commands_and_outputs(lines: list[str]) -> list[tuple[str, list[str]]]:
    out = []
    for line in lines:
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def marked_blocks(text: str, marker: str) -> list[tuple[int, list[str]]]:
    """(line number, lines) of each fenced block right after a `<!-- marker -->` line."""
    lines = text.splitlines()
    return [(start + 1, body) for start, _, body in _fenced_blocks(text)
            if start > 0 and lines[start - 1].strip() == f"<!-- {marker} -->"]


TRANSCRIPTS = [(doc, line, body) for doc in ALL_DOCS for line, body in marked_blocks(doc.read_text(), "transcript")]


def _workdir(tmp_path: Path) -> Path:
    for name in ("examples", "scripts"):
        shutil.copytree(REPO / name, tmp_path / name)
    return tmp_path


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _run(argv: list[str], cwd: Path, env: dict) -> list[str]:
    """What a terminal shows of one command: graphfix's stderr lines (progress) first, then stdout."""
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return [line for line in proc.stderr.splitlines() if line.startswith("graphfix: ")] + proc.stdout.splitlines()


def _explain(want: list[str], got: list[str]) -> str:
    return "expected (transcript):\n" + "\n".join(want) + "\n\ngot:\n" + "\n".join(got)


def test_there_are_tested_transcripts():
    assert len(TRANSCRIPTS) >= 3, [(_rel(d), n) for d, n, _ in TRANSCRIPTS]
    assert len(marked_blocks(README.read_text(), "demo-transcript")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("doc, line, body", TRANSCRIPTS, ids=[f"{_rel(d)}:{n}" for d, n, _ in TRANSCRIPTS])
def test_transcript_is_what_the_commands_print(doc, line, body, tmp_path):
    work = _workdir(tmp_path)
    for command, want in _commands_and_outputs(body):
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "graphfix"], f"{_rel(doc)}:{line}: only graphfix commands run here"
        got = _run([sys.executable, *argv[1:]], work, _env())
        assert transcript_matches(want, got), _explain(want, got)


@pytest.mark.slow
def test_readme_demo_transcript_is_what_demo_sh_prints(tmp_path):
    """scripts/demo.sh step by step (its python lines with this interpreter) in a copy of the
    repo's examples/ and scripts/, against the README's transcript."""
    ((_, body),) = marked_blocks(README.read_text(), "demo-transcript")
    work, env, got = _workdir(tmp_path), _env(), []
    for step in (REPO / "scripts" / "demo.sh").read_text().splitlines():
        if not step.strip() or step.startswith(("#", "set ", "cd ")) or step == "bash scripts/setup.sh":
            continue
        if step.startswith("export "):
            key, _, value = step[len("export "):].partition("=")
            env[key] = value
        elif step.startswith("mkdir -p "):
            (work / step[len("mkdir -p "):]).mkdir(parents=True, exist_ok=True)
        elif step.startswith('echo "') and step.endswith('"'):
            got.append(step[len('echo "'):-1])
        elif step.startswith(".venv/bin/python "):
            got += _run([sys.executable, *shlex.split(step)[1:]], work, env)
        else:
            pytest.fail(f"scripts/demo.sh has a step this test does not know how to follow: {step!r}")
    assert transcript_matches(body, got), _explain(body, got)
