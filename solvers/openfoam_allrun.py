"""Derives an OpenFOAM case's pre-processing steps from its Allrun (or Allrun.pre), refusing what it cannot read.

A tutorial's Allrun is a shell script; the engine never runs it. It reads a small, fixed grammar of the lines the
shipped tutorials use and turns them into steps (dicts of the `steps:` option: run, args, parallel, log). Any
other line stops the submit with an AllrunError naming the file, the line number and the line: a step is never
skipped silently. Understood lines (README.md lists them too):

- blank lines, comments, the shebang; `cd "${0%/*}" || exit` (and `cd ${0%/*} || exit 1`)
- `. ${WM_PROJECT_DIR:?}/bin/tools/RunFunctions` (and `. $WM_PROJECT_DIR/bin/tools/RunFunctions`)
- `restore0Dir`
- `runApplication [-s SUFFIX] [-o] UTILITY [ARGS]`, `runParallel [-s SUFFIX] [-o] UTILITY [ARGS]`
  (`-s` names the log log.UTILITY.SUFFIX, as RunFunctions does; `-a`, `-np` and `-decomposeParDict` are refused)
- `runApplication decomposePar [-force]` and `runApplication reconstructPar [-latestTime]`: dropped, the engine
  decomposes and reconstructs itself
- `cp`/`\\cp`/`mv` [-r|-f|-rf] of files inside the case (relative paths, no `..`, no variables or globs)
- `./Allrun.pre` (or `runApplication ./Allrun.pre`): its lines are read in place
- `application=$(getApplication)`, then the solver, last: `runApplication $(getApplication)`,
  `runParallel $(getApplication)`, `$application`, or the controlDict's application by name
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

WORD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_CD = re.compile(r"""^cd\s+("\$\{0%/\*\}"|\$\{0%/\*\})\s*\|\|\s*exit(\s+\d+)?\s*;?(\s+#.*)?$""")
_RUN_FUNCTIONS = re.compile(r"^\.\s+\"?\$(\{WM_PROJECT_DIR(:\?)?\}|WM_PROJECT_DIR)/bin/tools/RunFunctions\"?"
                            r"\s*;?(\s+#.*)?$")
_GET_APP = ("$(getApplication)", "`getApplication`")
_OPERATORS = set(";&|<>()")
BUILTINS = ("restore0Dir", "cp", "mv")
# Dropped: the engine writes its own decomposeParDict, decomposes before the parallel steps and reconstructs the
# latest time after the solver. Only their plain forms: other options change what they do.
_IMPLIED = {"decomposePar": {"-force"}, "reconstructPar": {"-latestTime"}}
SUGGEST = "list the pre-processing in the job's `solver.steps` instead (README: OpenFOAM case pipelines)"


class AllrunError(ValueError):
    """A line of an Allrun the engine does not understand: the file, the line number and the line."""

    def __init__(self, path: Path, number: int, line: str, why: str) -> None:
        self.path, self.number, self.line, self.why = path, number, line, why
        where = f"{path.name} line {number}: {line.strip()!r}" if number else path.name  # 0: the whole file
        super().__init__(f"{where}: {why}; {SUGGEST}")


@dataclass
class Derived:
    """What an Allrun says: the steps before the solver, and whether (and how) it runs the solver."""

    steps: list[dict[str, Any]]
    solver_line: int | None = None      # the line number of the solver, None in an Allrun.pre
    source: str = "Allrun"


def allrun_of(case: Path) -> Path | None:
    """The script to derive from: Allrun, else Allrun.pre (None when the case has neither)."""
    for name in ("Allrun", "Allrun.pre"):
        if (case / name).is_file():
            return case / name
    return None


def derive(case: Path, application: str) -> Derived | None:
    """The steps the case's Allrun (or Allrun.pre) runs before `application`; None without either.
    Raises AllrunError on any line outside the grammar, and when the Allrun does not end with the solver."""
    script = allrun_of(case)
    if script is None:
        return None
    parser = _Parser(case, application)
    parser.read(script, nested=False)
    if script.name == "Allrun" and parser.solver_line is None:
        raise AllrunError(script, 0, "", "it never runs the solver as a line of its own (runApplication "
                          "$(getApplication))")
    return Derived(parser.steps, parser.solver_line, script.name)


class _Parser:
    def __init__(self, case: Path, application: str) -> None:
        self.case, self.application = case, application
        self.steps: list[dict[str, Any]] = []
        self.solver_line: int | None = None
        self.app_variable = False

    def read(self, script: Path, nested: bool) -> None:
        try:
            text = script.read_text(errors="replace")
        except OSError as exc:
            raise AllrunError(script, 0, "", f"cannot be read ({exc.strerror or exc})") from None
        for number, line in _logical_lines(text):
            self.line(script, number, line, nested)

    def line(self, script: Path, number: int, line: str, nested: bool) -> None:
        bare = line.strip()
        if not bare or bare.startswith("#") or _CD.match(bare) or _RUN_FUNCTIONS.match(bare):
            return

        def refuse(why: str) -> AllrunError:
            return AllrunError(script, number, line, why)

        if self.solver_line is not None:
            words = _words(bare, refuse)
            if words[:2] == ["runApplication", "reconstructPar"] and set(words[2:]) <= _IMPLIED["reconstructPar"]:
                return  # the engine reconstructs the latest time itself
            raise refuse("comes after the solver; the engine runs pre-processing steps only")
        if bare == "application=$(getApplication)":
            self.app_variable = True
            return
        pre = self.case / "Allrun.pre"
        if bare in ("./Allrun.pre", "runApplication ./Allrun.pre") and not nested and pre.is_file():
            self.read(pre, nested=True)
            return
        words = _words(bare, refuse)
        head = words[0].lstrip("\\")  # `\cp`: the alias-free cp
        if head == "restore0Dir":
            if words[1:]:
                raise refuse("restore0Dir takes no options here (-processor restores into a decomposition)")
            self.steps.append({"run": "restore0Dir"})
        elif head in ("cp", "mv"):
            problem = file_args_problem(head, words[1:])
            if problem:
                raise refuse(problem)
            self.steps.append({"run": head, "args": words[1:]})
        elif head in ("runApplication", "runParallel"):
            self.run_function(head == "runParallel", words[1:], refuse, number)
        elif self.is_solver(words[0]):
            self.solver(words[1:], refuse, number)
        else:
            raise refuse("not a line the engine understands in an Allrun")

    def run_function(self, parallel: bool, words: list[str], refuse, number: int) -> None:
        suffix = None
        while words and words[0].startswith("-"):
            option = words.pop(0)
            if option == "-s" and words and SUFFIX.match(words[0]):
                suffix = words.pop(0)
            elif option in ("-o", "-overwrite"):
                continue  # every engine run writes fresh logs
            elif option == "-s":
                raise refuse("-s needs a plain log suffix (letters, digits, . _ + -)")
            else:
                raise refuse(f"the RunFunctions option {option} is not supported (-s SUFFIX and -o are)")
        if not words:
            raise refuse("names no utility")
        if self.is_solver(words[0]):
            self.solver(words[1:], refuse, number)
            return
        utility, args = words[0], words[1:]
        if utility in _IMPLIED and not parallel:
            if set(args) <= _IMPLIED[utility]:
                return  # the engine's own decomposition and reconstruction
            raise refuse(f"{utility} with options the engine does not apply ({' '.join(args)}); the engine runs "
                         f"its own {utility}")
        if not WORD.match(utility):
            raise refuse(f"{utility!r} is not a utility name (one word of letters, digits and _)")
        if "-decomposeParDict" in args or "-np" in args:
            raise refuse("the engine decomposes over the job's allocation with its own decomposeParDict")
        if not parallel and any(s.get("parallel") for s in self.steps):
            raise refuse("a serial step after a parallel one (the engine runs serial steps, then decomposes, "
                         "then the parallel ones)")
        step: dict[str, Any] = {"run": utility, "args": args, "parallel": parallel}
        if suffix:
            step["log"] = f"log.{utility}.{suffix}"
        self.steps.append(step)

    def is_solver(self, word: str) -> bool:
        return word in _GET_APP or word == self.application or (self.app_variable and word == "$application")

    def solver(self, args: list[str], refuse, number: int) -> None:
        if args:
            raise refuse("the solver with arguments (the engine runs it as `application`, with -parallel when "
                         "decomposed)")
        self.solver_line = number


def file_args_problem(command: str, args: list[str]) -> str | None:
    """Why `cp`/`mv` ARGS is not a copy of files inside the case (None when it is): options -r/-f only,
    then at least two relative paths with no `..`."""
    paths = list(args)
    while paths and paths[0].startswith("-"):
        if paths[0] not in ("-r", "-f", "-rf", "-fr", "-R"):
            return f"{command} {paths[0]}: only -r and -f are understood"
        paths.pop(0)
    if len(paths) < 2:
        return f"{command} needs a source and a destination inside the case"
    for path in paths:
        if not path or path.startswith(("/", "~", "-")) or ".." in PurePosixPath(path).parts:
            return f"{command} {path!r}: only relative paths inside the case (no '..', no absolute path)"
        if any(c in path for c in "*?[]$`\\\n\0"):
            return f"{command} {path!r}: no variables, globs or escapes"
    return None


def _logical_lines(text: str):
    """(first line number, line) with backslash-continued lines joined, as the shell reads them."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\") and not raw.lstrip().startswith("#"):
            pending += raw[:-1] + " "
            continue
        yield start, pending + raw
        pending = ""
    if pending:
        yield start, pending


def _words(line: str, refuse) -> list[str]:
    """The shell words of a simple command; shell operators, variables and command substitutions refused (the
    solver's `$(getApplication)` and `$application`, each a whole word, are the ones understood)."""
    marked = line
    for word, mark in _SUBSTITUTIONS.items():
        marked = marked.replace(word, mark)
    if "$" in marked or "`" in marked:
        raise refuse("a shell variable or command substitution")
    lexer = shlex.shlex(marked, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError as exc:
        raise refuse(f"cannot be split into words ({exc})") from None
    if words and words[-1] == ";":
        words.pop()  # `restore0Dir;`: one command, ended
    if any(w and set(w) <= _OPERATORS for w in words):
        raise refuse("a compound shell command (;, &&, ||, |, redirections, subshells)")
    back = {mark: word for word, mark in _SUBSTITUTIONS.items()}
    return [back.get(w, w) for w in words]


# Stand-ins while the line is split (shlex would cut `$(getApplication)` at its parentheses).
_SUBSTITUTIONS = {"$(getApplication)": "E2E0GETAPPLICATION", "`getApplication`": "E2E0GETAPPLICATION",
                  "${application}": "E2E0APPLICATION", "$application": "E2E0APPLICATION"}
