"""The docs tell the truth about the CLI: the reference is current, and every `./review ...` command that a
doc, a page or a message prints names a real command with real options and runs (`--help`) as printed."""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 150
COMMAND = re.compile(r"\./review(?![\w/.-])")
OLD_FORM = re.compile(r"(?:\.venv/bin/)?python3? -m lib\b")
FENCE = re.compile(r"^\s*(```|~~~)")
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z_]*|\.\.\.|…)$")  # `./review COMMAND ...`: any command of a group


@dataclass(frozen=True)
class Printed:
    """One `./review ...` command as printed: where, and the words after `./review`."""
    where: str  # file:line
    text: str

    def words(self) -> list[str]:
        try:
            words = shlex.split(self.text, comments=True)
        except ValueError:  # an unbalanced quote in a fragment: plain words are enough to resolve it
            words = self.text.split()
        return [w.strip("[]") for w in words if w.strip("[]")]


def _cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ collecting printed text

def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _code_files() -> list[Path]:
    return [*sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "lib").rglob("*.py")),
            *sorted((ROOT / "scripts").glob("*.py")), ROOT / "streamlit_app.py"]


def _markdown_texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every code-block line (continuations joined) and inline code span of a Markdown file."""
    out: list[tuple[int, str]] = []
    prose: list[tuple[int, str]] = []
    in_block, pending, pending_line = False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_block = not in_block
            continue
        if not in_block:
            prose.append((number, line))
            continue
        if not pending:
            pending_line = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((pending_line, pending + line))
        pending = ""
    # Inline code may wrap inside a paragraph: join the prose, then map each span back to its line.
    text = "\n".join(line for _, line in prose)
    starts = [0]
    for _, line in prose:
        starts.append(starts[-1] + len(line) + 1)
    for span in re.finditer(r"(`+)(.+?)\1", text, flags=re.S):
        index = sum(1 for s in starts[1:] if s <= span.start())
        out.append((prose[index][0], span.group(2).replace("\n", " ")))
    return out


def _literal_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):  # f-string: each {value} stands for one word
        return "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
    return None


def _python_texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of a module; f-string parts are read as one string."""
    tree = ast.parse(path.read_text(), filename=str(path))
    inside_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    out = []
    for node in ast.walk(tree):
        text = _literal_text(node)
        if text is not None and id(node) not in inside_fstrings:
            out.extend((node.lineno + i, line) for i, line in enumerate(text.splitlines()))
    return out


def _texts() -> list[tuple[str, str]]:
    """(file:line, text) of everything a user can read: docs, pages, messages."""
    found = []
    for path in _doc_files():
        found += [(f"{path.relative_to(ROOT)}:{n}", t) for n, t in _markdown_texts(path)]
    for path in _code_files():
        found += [(f"{path.relative_to(ROOT)}:{n}", t) for n, t in _python_texts(path)]
    return found


def printed_commands() -> list[Printed]:
    """Every `./review ...` command printed, cut at a closing backtick (quotes belong to the command)."""
    commands = []
    for where, text in _texts():
        for match in COMMAND.finditer(text):
            rest = " ".join(text[match.end():].split("`", 1)[0].split())
            commands.append(Printed(where, rest.rstrip(" .,;:)")))
    return commands


# ------------------------------------------------------------------ resolving commands

def _tree():
    return _cli_reference().command_tree()


def resolve(root, printed: Printed) -> tuple[tuple[str, ...], list[str]]:
    """(command path, problems): the path named by the printed words, and what in them does not exist."""
    cmd, path, words = root, (), printed.words()
    i = 0
    while hasattr(cmd, "commands") and i < len(words) and not words[i].startswith("-"):
        word = words[i]
        if word in cmd.commands:
            cmd, path = cmd.commands[word], (*path, word)
            i += 1
        elif PLACEHOLDER.match(word):
            break
        else:
            return path, [f"unknown command '{' '.join((*path, word))}'"]
    known = {"--help"} | {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    used = {w.split("=", 1)[0] for w in words[i:] if w.startswith("--") and len(w) > 2}
    problems = [f"'./review {' '.join(path)}' has no option {opt}" for opt in sorted(used - known)]
    return path, problems + _missing_required(cmd, path, words[i:])


def _missing_required(cmd, path: tuple[str, ...], words: list[str]) -> list[str]:
    """A printed command must run as printed: its required options and arguments are there (a command
    ending in `...` or asking for --help is a pointer, not a command to run)."""
    mention = len(words) == 0  # `./review report` names a command in prose; the reference's headings too
    pointer = bool(words) and words[-1] in ("...", "…") or "OPTIONS" in words  # or a usage line
    if hasattr(cmd, "commands") or not path or "--help" in words or mention or pointer:
        return []
    used = {w.split("=", 1)[0] for w in words if w.startswith("-")}
    missing = [p.opts[0] for p in cmd.params if p.required and p.param_type_name == "option"
               and not used & {*p.opts, *p.secondary_opts}]
    n_args = sum(1 for p in cmd.params if p.required and p.param_type_name == "argument")
    positional = _positional(cmd, words)
    out = [f"'./review {' '.join(path)}' needs {opt}" for opt in missing]
    if positional < n_args:
        out.append(f"'./review {' '.join(path)}' needs {n_args} argument(s), got {positional}")
    return out


def _positional(cmd, words: list[str]) -> int:
    """Words that are not options or option values."""
    flags = {opt for p in cmd.params if p.param_type_name == "option" and p.is_flag
             for opt in (*p.opts, *p.secondary_opts)}
    count, skip = 0, False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = "=" not in word and word not in flags
        else:
            count += 1
    return count


def test_the_collector_finds_commands_everywhere() -> None:
    where = {p.where.split(":")[0] for p in printed_commands()}
    assert "README.md" in where and any(w.startswith("docs/") for w in where)
    assert any(w.startswith("pages/") for w in where) and any(w.startswith("lib/") for w in where)


def test_the_resolver_rejects_unknown_commands_and_options() -> None:
    root = _tree()
    assert resolve(root, Printed("x", "policy create --name a --file p.toml")) == (("policy", "create"), [])
    assert resolve(root, Printed("x", "policy creat --name a"))[1] == ["unknown command 'policy creat'"]
    assert resolve(root, Printed("x", "gate NAME --polcy p"))[1] == ["'./review gate' has no option --polcy",
                                                                     "'./review gate' needs --policy"]
    assert resolve(root, Printed("x", "canary check --log x.csv"))[1] == ["'./review canary check' needs --policy"]
    assert resolve(root, Printed("x", "report --json"))[1] == ["'./review report' needs 1 argument(s), got 0"]
    assert resolve(root, Printed("x", "report NAME --json"))[1] == []
    assert resolve(root, Printed("x", "redteam ..."))[1] == []  # a pointer to a command, not one to run
    assert resolve(root, Printed("x", "COMMAND --help")) == ((), [])


def test_every_printed_command_and_option_exists() -> None:
    root = _tree()
    problems = [f"{p.where}: `./review {p.text}`: {problem}"
                for p in printed_commands() for problem in resolve(root, p)[1]]
    assert not problems, "\n".join(problems)


def test_nothing_prints_the_old_module_form() -> None:
    found = [f"{where}: {text.strip()}" for where, text in _texts() if OLD_FORM.search(text)]
    assert not found, "print `./review ...` instead:\n" + "\n".join(found)


@pytest.mark.slow
def test_every_printed_command_runs_its_help_in_a_fresh_shell() -> None:
    root = _tree()
    paths = sorted({resolve(root, p)[0] for p in printed_commands()})
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}

    def run(path: tuple[str, ...]) -> tuple[str, int, str]:
        line = " ".join(["./review", *path, "--help"])
        out = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "sh", "-c", line],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        return line, out.returncode, out.stderr.strip()[-300:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, paths))
    failed = [f"{line}: exit {code} {err}" for line, code, err in results if code != 0]
    assert len(paths) > 10 and not failed, "\n".join(failed)


def test_the_cli_reference_is_current() -> None:
    module = _cli_reference()
    assert (ROOT / "docs" / "cli-reference.md").read_text() == module.render(), (
        f"docs/cli-reference.md is stale: run `{module.REGENERATE}`")


def test_the_readme_is_short() -> None:
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_docs_points_at_a_file_and_heading() -> None:
    broken = []
    for path in _doc_files():
        text = path.read_text()
        for match in re.finditer(r"(?<!!)\[[^\]]+\]\(([^)\s]+)\)", text):
            target, _, anchor = match.group(1).partition("#")
            if re.match(r"\w+://", target):
                continue
            file = (path.parent / target).resolve() if target else path
            headings = [] if not file.is_file() or file.suffix != ".md" else [
                _slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)]
            if not file.exists() or (anchor and anchor not in headings):
                line = text[:match.start()].count("\n") + 1
                broken.append(f"{path.relative_to(ROOT)}:{line}: {match.group(1)}")
    assert not broken, "broken links:\n" + "\n".join(broken)
