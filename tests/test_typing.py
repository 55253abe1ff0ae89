"""Static typing: example programs checked by mypy, and the engine's stubs checked against its code.

**Examples** (``tests/typing/``): ``pass_*.py`` are small user programs written against the public
API with ``typing.assert_type`` on the return types that matter; mypy ``--strict`` must find
nothing in them, and each must also run (under both engines), so they cannot rot. ``fail_*.py``
misuse the API on purpose; every line that must be an error ends with ``# E: <fragment>`` (one
marker per expected error), and mypy must report exactly those errors on exactly those lines.
mypy finds kincir where this test imported it from: the source tree (added to ``MYPYPATH``) or
an installed wheel (its ``py.typed`` makes it visible from site-packages).

**Stub parity** (``kincir_core/_broker.pyi``, ``_message.pyi``): the compiled modules cannot be
introspected by type checkers, so their stubs are the typing contract; they must say what the
twin (``_broker_py``, ``_message_py``) and the ``.pyx`` source say. Three surfaces are built:

- the stub, parsed with ``ast``;
- the twin, imported (``inspect.signature`` of every function; classes' members from their
  ``__dict__``, plus the instance attributes their methods assign, found with ``ast``);
- the engine's Python-visible surface, scanned from the ``.pyx``/``.pxd`` source with the
  ``.pxi`` files it includes inlined (``def`` and ``cpdef`` functions and methods, ``cdef
  class``es, ``cdef public``/``readonly`` attributes, module-level Python assignments);
  ``cdef`` functions, methods and fields are C-level, invisible to Python and to type checkers.

Names compared: public ones (no leading underscore), the protocol dunders below, and every
name the stub declares (engine-internal methods that the public layer calls have underscores).
The stub and the twin must declare the same names with the same kind (function, class, method,
classmethod, staticmethod, data) and the same parameters (name, kind, has a default), except
that a twin name the engine keeps C-level need not (must not) be in the stub. Every name the
stub declares must be visible in the engine with the same kind and parameters as its ``def``.
Known differences are listed, with their reasons, in ``ENGINE_ONLY``; an entry that is no longer
a difference fails, so the list cannot go stale.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import site
import subprocess
import sys
import sysconfig
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import kincir
import kincir_core

TYPING_DIR = Path(__file__).resolve().parent / "typing"
MYPY_INI = TYPING_DIR / "mypy.ini"
PASS_FILES = sorted(TYPING_DIR.glob("pass_*.py"))
FAIL_FILES = sorted(TYPING_DIR.glob("fail_*.py"))
ENGINE_DIR = Path(kincir_core.__file__).resolve().parent
ENGINE_MODULES = ("_broker", "_message")

# Names with leading underscores that are part of protocols the engine's objects implement.
PROTOCOL_DUNDERS = frozenset(
    {
        "__iter__",
        "__next__",
        "__aiter__",
        "__anext__",
        "__await__",
        "__enter__",
        "__exit__",
        "__aenter__",
        "__aexit__",
        "__call__",
        "__len__",
        "__contains__",
        "__getitem__",
    }
)

# Names the engine exposes to Python that the twin does not have, by module; "Class" or
# "Class.member". The stub may (and, for names it needs, does) declare them.
ENGINE_ONLY: dict[str, dict[str, str]] = {
    "_broker": {
        "Waiter": "the cdef base class of SyncWaiter and AsyncWaiter (TopicLog.remove_room_waiter "
        "takes one); the twin's waiters are duck-typed, with no common base",
        "PublishOp": "the awaitable PublisherCore.publish returns (no coroutine frame); the twin "
        "returns a coroutine, and the stub says Coroutine",
        "ReceiveOp": "the awaitable SubscriberCore.receive returns; as PublishOp",
    },
}


# -- mypy over the examples ---------------------------------------------------------------------


def _site_dirs() -> set[Path]:
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    dirs += [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    return {Path(d).resolve() for d in dirs if d}


def package_roots() -> list[Path]:
    """The sys.path entries this test imported kincir and kincir_core from."""
    roots: list[Path] = []
    for module in (kincir, kincir_core):
        root = Path(module.__file__).resolve().parent.parent  # type: ignore[arg-type]
        if root not in roots:
            roots.append(root)
    return roots


def mypy_path() -> list[Path]:
    """Where mypy must look for kincir: nowhere extra for an installed package (mypy finds
    packages with a py.typed in the interpreter's site-packages), the roots otherwise."""
    site_dirs = _site_dirs()
    return [root for root in package_roots() if root not in site_dirs]


_DIAGNOSTIC = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+): (?P<severity>error|note|warning): (?P<msg>.*)$"
)
_MARKER = re.compile(r"#\s*E:\s*(.*?)\s*(?=#\s*E:|$)")


@dataclass(frozen=True)
class Diagnostic:
    line: int
    severity: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.severity}: {self.message}"


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, list[Diagnostic]]:
    """mypy --strict over every example at once: file -> its diagnostics."""
    api = pytest.importorskip(
        "mypy.api", reason="mypy is not installed (it is in the test extra: pip install '.[test]')"
    )
    assert PASS_FILES and FAIL_FILES, f"no pass_*.py / fail_*.py examples in {TYPING_DIR}"
    cache = tmp_path_factory.mktemp("mypy_cache")
    args = [
        "--config-file",
        str(MYPY_INI),
        "--strict",
        "--cache-dir",
        str(cache),
        "--show-absolute-path",
        "--no-pretty",
        "--no-color-output",
        "--no-error-summary",
        *(str(path) for path in PASS_FILES + FAIL_FILES),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MYPYPATH", os.pathsep.join(str(p) for p in mypy_path()))
        stdout, stderr, status = api.run(args)
    if status not in (0, 1) or stderr:
        pytest.fail(f"mypy did not run (exit {status}):\n{stderr}\n{stdout}", pytrace=False)
    report: dict[Path, list[Diagnostic]] = {path: [] for path in PASS_FILES + FAIL_FILES}
    others: list[str] = []
    for text in stdout.splitlines():
        match = _DIAGNOSTIC.match(text)
        path = Path(match["path"]).resolve() if match else None
        if match is None or path not in report:
            # kincir's own sources, when checked from the tree, are mypy's lint job, not this one
            others.append(text)
            continue
        report[path].append(Diagnostic(int(match["line"]), match["severity"], match["msg"]))
    if status == 1 and not any(report.values()):
        pytest.fail("mypy failed, but not in the examples:\n" + "\n".join(others), pytrace=False)
    return report


@pytest.mark.parametrize("path", PASS_FILES, ids=lambda p: p.name)
def test_pass_example_is_clean(mypy_report: dict[Path, list[Diagnostic]], path: Path) -> None:
    found = mypy_report[path]
    assert not found, f"mypy --strict on {path.name}:\n" + "\n".join(map(str, found))


def expected_errors(path: Path) -> dict[int, list[str]]:
    """Line -> the fragments of the errors expected there (``# E: fragment`` markers)."""
    expected: dict[int, list[str]] = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if "# E:" in text:
            fragments = _MARKER.findall(text[text.index("# E:") :])
            assert all(fragments), f"{path.name}:{number}: an empty # E: marker"
            expected[number] = fragments
    return expected


@pytest.mark.parametrize("path", FAIL_FILES, ids=lambda p: p.name)
def test_fail_example_reports_exactly_the_marked_errors(
    mypy_report: dict[Path, list[Diagnostic]], path: Path
) -> None:
    expected = expected_errors(path)
    assert expected, f"{path.name} marks no expected error"
    errors: dict[int, list[str]] = {}
    for diag in mypy_report[path]:
        if diag.severity == "error":
            errors.setdefault(diag.line, []).append(diag.message)
    problems = []
    for line in sorted(expected.keys() | errors.keys()):
        fragments, messages = expected.get(line, []), errors.get(line, [])
        unmatched = [m for m in messages if not any(f in m for f in fragments)]
        missing = [f for f in fragments if not any(f in m for m in messages)]
        problems += [f"line {line}: unexpected error: {m}" for m in unmatched]
        problems += [f"line {line}: expected an error containing {f!r}" for f in missing]
        if len(messages) != len(fragments) and not unmatched and not missing:
            problems.append(f"line {line}: {len(fragments)} markers for errors {messages}")
    assert not problems, f"mypy --strict on {path.name}:\n" + "\n".join(problems)


def test_markers_are_parsed() -> None:
    line = 'x = f(1)  # E: Argument 1 to "f"  # E: Incompatible types'
    assert _MARKER.findall(line[line.index("# E:") :]) == [
        'Argument 1 to "f"',
        "Incompatible types",
    ]


# -- the examples run ----------------------------------------------------------------------------

_RUNNER = """\
import os, runpy, sys
import kincir
assert kincir.IMPLEMENTATION == sys.argv[2], f"ran on the {kincir.IMPLEMENTATION} engine"
assert os.path.realpath(kincir.__file__) == sys.argv[3], f"imported {kincir.__file__}"
runpy.run_path(sys.argv[1], run_name="__main__")
"""


@pytest.mark.parametrize("path", PASS_FILES, ids=lambda p: p.name)
def test_pass_example_runs(k: types.SimpleNamespace, path: Path, tmp_path: Path) -> None:
    """Each clean example is a working program, on both engines, with the kincir tested here."""
    env = dict(os.environ)
    env.pop("KINCIR_NO_EXTENSIONS", None)
    if k.impl == "python":
        env["KINCIR_NO_EXTENSIONS"] = "1"
    roots = [str(root) for root in package_roots()]
    env["PYTHONPATH"] = os.pathsep.join([*roots, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(path), k.impl, os.path.realpath(kincir.__file__)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{path.name} failed:\n{result.stdout}\n{result.stderr}"


# -- stub parity ---------------------------------------------------------------------------------

Params = tuple[tuple[str, str, bool], ...]  # (name, inspect.Parameter kind name, has a default)


@dataclass(frozen=True)
class Member:
    kind: str  # "class", "function", "method", "classmethod", "staticmethod" or "data"
    params: Params | None = None  # callables only; None where the source gives no signature

    def __str__(self) -> str:
        if self.params is None:
            return self.kind
        shown = []
        for name, kind, default in self.params:
            prefix = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(kind, "")
            suffix = "=..." if default else ""
            tag = {"KEYWORD_ONLY": " (kw-only)", "POSITIONAL_ONLY": " (pos-only)"}.get(kind, "")
            shown.append(f"{prefix}{name}{suffix}{tag}")
        return f"{self.kind}({', '.join(shown)})"


@dataclass
class Surface:
    """A module's names (module level, and per class) and what each one is."""

    names: dict[str, Member]
    classes: dict[str, dict[str, Member]]

    def members(self, owner: str | None) -> dict[str, Member]:
        """The module's names (owner None) or a class's members (none if no such class)."""
        return self.names if owner is None else self.classes.get(owner, {})


def _ast_params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> Params:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    params: list[tuple[str, str, bool]] = []
    for index, arg in enumerate(positional):
        kind = "POSITIONAL_ONLY" if index < len(args.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        params.append((arg.arg, kind, index >= first_default))
    if args.vararg is not None:
        params.append((args.vararg.arg, "VAR_POSITIONAL", False))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append((arg.arg, "KEYWORD_ONLY", default is not None))
    if args.kwarg is not None:
        params.append((args.kwarg.arg, "VAR_KEYWORD", False))
    return tuple(params)


def _decorators(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    return {ast.unparse(d) for d in node.decorator_list}


def _ast_member(node: ast.stmt) -> tuple[str, Member] | None:
    """A class-body or module-level statement's name and member, if it declares one."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        decorators = _decorators(node)
        if any(d.endswith((".setter", ".deleter")) for d in decorators):
            return None  # the property's other half
        if "property" in decorators:
            return node.name, Member("data")
        kind = next((d for d in ("classmethod", "staticmethod") if d in decorators), "method")
        return node.name, Member(kind, _ast_params(node))
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, Member("data")
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        if isinstance(target, ast.Name) and target.id != "__slots__":
            return target.id, Member("data")
    return None


def _is_type_variable(node: ast.stmt) -> bool:
    """``T = TypeVar("T", ...)`` (or ParamSpec / TypeVarTuple) at a stub's top level."""
    return (
        isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id in ("TypeVar", "ParamSpec", "TypeVarTuple")
    )


def stub_surface(path: Path) -> Surface:
    tree = ast.parse(path.read_text(), str(path))
    names: dict[str, Member] = {}
    classes: dict[str, dict[str, Member]] = {}
    bases: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = Member("class")
            body = [m for m in map(_ast_member, node.body) if m is not None]
            classes[node.name] = dict(body)
            bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
        elif _is_type_variable(node):
            continue  # a stub's own typing device, not part of the module
        elif (found := _ast_member(node)) is not None:
            name, member = found
            names[name] = Member("function", member.params) if member.kind == "method" else member

    def inherited(cls: str) -> dict[str, Member]:
        merged: dict[str, Member] = {}
        for base in reversed(bases[cls]):
            if base in classes:
                merged.update(inherited(base))
        merged.update(classes[cls])
        return merged

    return Surface(names, {cls: inherited(cls) for cls in classes})


def _signature(function: object) -> Params:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return tuple(
        (p.name, p.kind.name, p.default is not inspect.Parameter.empty)
        for p in signature.parameters.values()
    )


_SKIPPED_ATTRS = frozenset(
    {"__slots__", "__module__", "__doc__", "__dict__", "__weakref__", "__annotations__"}
)


def _runtime_member(value: object) -> Member:
    if isinstance(value, classmethod):
        return Member("classmethod", _signature(value.__func__))
    if isinstance(value, staticmethod):
        return Member("staticmethod", _signature(value.__func__))
    if inspect.isfunction(value):
        return Member("method", _signature(value))
    return Member("data")  # properties, slots, class-level values


def _assigned_attributes(node: ast.ClassDef) -> set[str]:
    """``self.<name>`` targets of assignments in the class's methods."""
    found: set[str] = set()
    for sub in ast.walk(node):
        targets: list[ast.expr] = []
        if isinstance(sub, ast.Assign):
            targets = list(sub.targets)
        elif isinstance(sub, ast.AnnAssign | ast.AugAssign):
            targets = [sub.target]
        for target in targets:
            for leaf in ast.walk(target):
                if (
                    isinstance(leaf, ast.Attribute)
                    and isinstance(leaf.value, ast.Name)
                    and leaf.value.id == "self"
                ):
                    found.add(leaf.attr)
    return found


def _defined_name(node: ast.stmt) -> str | None:
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name
    found = _ast_member(node)
    return None if found is None else found[0]


def _twin_body(module: types.ModuleType) -> list[ast.stmt]:
    """The twin's module-level statements, with those of the twin's parts it imports names from
    (sibling ``*_py`` modules that are not the twin of another engine module)."""
    path = Path(module.__file__)  # type: ignore[arg-type]
    body = list(ast.parse(path.read_text()).body)
    others = {f"{name}_py" for name in ENGINE_MODULES}
    for node in list(body):
        if not (
            isinstance(node, ast.ImportFrom)
            and node.level == 1
            and node.module is not None
            and node.module.endswith("_py")
            and node.module not in others
        ):
            continue
        imported = {alias.name for alias in node.names if alias.asname is None}
        part = ast.parse((path.parent / f"{node.module}.py").read_text())
        body += [n for n in part.body if _defined_name(n) in imported]
    return body


def twin_surface(module: types.ModuleType) -> Surface:
    """What the twin defines (not what it imports, except from its own parts), from the source."""
    body = _twin_body(module)
    names: dict[str, Member] = {}
    classes: dict[str, dict[str, Member]] = {}
    class_nodes = {n.name: n for n in body if isinstance(n, ast.ClassDef)}
    for node in body:
        found = _ast_member(node)
        if isinstance(node, ast.ClassDef):
            names[node.name] = Member("class")
        elif found is not None:
            name, member = found
            value = getattr(module, name)
            names[name] = Member("function", _signature(value)) if callable(value) else member
    for name in class_nodes:
        cls = getattr(module, name)
        members: dict[str, Member] = {}
        for klass in reversed(cls.__mro__):
            if (
                class_nodes.get(klass.__name__) is None
                or getattr(module, klass.__name__) is not klass
            ):
                continue  # object, or a class from elsewhere
            for attr in _assigned_attributes(class_nodes[klass.__name__]):
                members.setdefault(attr, Member("data"))
            for attr in vars(klass).get("__annotations__", {}):
                members[attr] = Member("data")
            for attr, value in vars(klass).items():
                if attr not in _SKIPPED_ATTRS:
                    members[attr] = _runtime_member(value)
        classes[name] = members
    return Surface(names, classes)


# The engine's source, scanned line by line: a Python-visible definition starts a line at the
# module's or the class body's indentation.
_CLASS = re.compile(r"^(?:cdef\s+)?class\s+(\w+)\b[^\n]*:\s*(?:#.*)?$")
_DEF = re.compile(
    r"^(?P<indent>\s*)(?:async\s+def|def|cpdef)\s+(?:[\w.\[\], ]+\s+)??(?P<name>\w+)\s*\("
)
_FIELD = re.compile(r"^\s+cdef\s+(?:public|readonly)\s+[^#]*?\b(\w+)\s*(?:#.*)?$")
_CONSTANT = re.compile(r"^([A-Za-z_]\w*)\s*(?::[^=]*)?=(?!=)")


def _split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _cython_params(text: str) -> Params:
    """The parameters of a ``def`` line's argument list, C types dropped."""
    params: list[tuple[str, str, bool]] = []
    kind = "POSITIONAL_OR_KEYWORD"
    for part in _split_params(text):
        if part == "*":
            kind = "KEYWORD_ONLY"
            continue
        if part == "/":
            params = [(n, "POSITIONAL_ONLY", d) for n, _, d in params]
            continue
        declaration, _, default = part.partition("=")
        declaration = re.sub(r"\s+(?:not|or)\s+None\s*$", "", declaration.strip())
        name = re.findall(r"\w+", declaration)[-1]
        if declaration.startswith("**"):
            params.append((name, "VAR_KEYWORD", False))
        elif declaration.startswith("*"):
            params.append((name, "VAR_POSITIONAL", False))
            kind = "KEYWORD_ONLY"
        else:
            params.append((name, kind, bool(default.strip())))
    return tuple(params)


def _def_params(lines: list[str], start: int) -> Params:
    """The parameters of the ``def`` starting at ``lines[start]`` (which may span lines)."""
    text = lines[start][lines[start].index("(") + 1 :]
    depth, end = 1, None
    index = start
    while end is None:
        for offset, char in enumerate(text):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                end = offset
                break
        if end is None:
            index += 1
            text += " " + lines[index].strip()
    return _cython_params(text[:end])


_INCLUDE = re.compile(r"""^include\s+["']([\w.]+\.pxi)["']\s*(?:#.*)?$""")


def _with_includes(path: Path) -> list[str]:
    """The lines of a .pyx or .pxd, each ``include "x.pxi"`` replaced by that file's lines."""
    lines: list[str] = []
    for line in path.read_text().splitlines():
        match = _INCLUDE.match(line)
        lines += _with_includes(path.parent / match[1]) if match else [line]
    return lines


def engine_surface(pyx: Path) -> Surface:
    """The names a compiled module shows Python, from its .pyx (and .pxd) source."""
    names: dict[str, Member] = {}
    classes: dict[str, dict[str, Member]] = {}
    for path in (pyx.with_suffix(".pxd"), pyx):
        if not path.exists():
            continue
        lines = _with_includes(path)
        owner: str | None = None
        in_string = False
        for index, line in enumerate(lines):
            quotes = line.count('"""') % 2 == 1
            if in_string or quotes:
                in_string ^= quotes
                continue  # docstring lines (a one-line docstring declares nothing either)
            if line and not line[0].isspace() and not line.startswith(("#", "@", ")")):
                owner = None  # back at module level
            if match := _CLASS.match(line):
                owner = match[1]
                names[owner] = Member("class")
                classes.setdefault(owner, {})
                continue
            target = names if owner is None else classes[owner]
            if (match := _DEF.match(line)) and len(match["indent"]) == (0 if owner is None else 4):
                decorators = set()
                back = index - 1
                while back >= 0 and lines[back].strip().startswith("@"):
                    decorators.add(lines[back].strip()[1:])
                    back -= 1
                if "property" in decorators:
                    target[match["name"]] = Member("data")
                else:
                    kind = "function" if owner is None else "method"
                    kind = next(
                        (d for d in ("classmethod", "staticmethod") if d in decorators), kind
                    )
                    target[match["name"]] = Member(kind, _def_params(lines, index))
            elif owner is not None and (match := _FIELD.match(line)):
                target[match[1]] = Member("data")
            elif owner is None and (match := _CONSTANT.match(line)):
                names[match[1]] = Member("data")
    for members in classes.values():
        # a cdef class may take its constructor's arguments in __cinit__
        if "__cinit__" in members:
            members.setdefault("__init__", members.pop("__cinit__"))
    return Surface(names, classes)


def _checked(name: str, stub: dict[str, Member]) -> bool:
    return not name.startswith("_") or name in PROTOCOL_DUNDERS or name in stub


STALE = "the twin has it or the engine does not: update the list"
NOT_IN_ENGINE = "the engine does not expose it (C-level or missing in the .pyx)"


def _compare(
    stub: Surface, twin: Surface, engine: Surface, engine_only: dict[str, str]
) -> list[str]:
    """Every disagreement between the stub, the twin and the engine's source."""
    problems: list[str] = []
    owners: list[str | None] = [None, *sorted(stub.classes.keys() | twin.classes.keys())]
    for owner in owners:
        s, t, e = stub.members(owner), twin.members(owner), engine.members(owner)
        if owner is not None and owner not in stub.classes:
            continue  # a twin-only class: reported (or exempted) at module level
        for name in sorted(n for n in s.keys() | t.keys() | e.keys() if _checked(n, s)):
            key = name if owner is None else f"{owner}.{name}"
            in_stub, in_twin, in_engine = name in s, name in t, name in e
            if key in engine_only:
                continue  # checked below
            if in_twin and not in_stub and not in_engine:
                continue  # C-level in the engine (cdef): nothing a type checker can see
            if not in_engine:
                problems.append(f"{key}: the stub declares it, {NOT_IN_ENGINE}")
            elif not in_stub:
                who = "the twin and the engine have" if in_twin else "the engine has"
                problems.append(f"{key}: {who} it ({e[name]}), the stub does not")
            elif not in_twin:
                problems.append(
                    f"{key}: the stub and the engine have it ({s[name]}), the twin does not"
                )
            else:
                if s[name] != t[name]:
                    problems.append(f"{key}: stub {s[name]} != twin {t[name]}")
                if s[name] != e[name]:
                    problems.append(f"{key}: stub {s[name]} != engine {e[name]}")
    for key in engine_only:
        owner, _, name = key.rpartition(".")
        in_twin = name in twin.members(owner or None)
        in_engine = name in engine.members(owner or None)
        if in_twin or not in_engine:
            problems.append(f"{key}: listed in ENGINE_ONLY, but {STALE}")
    return problems


def _parity_problems(module_name: str, pyi: Path, pyx: Path, twin_name: str) -> list[str]:
    twin = importlib.import_module(twin_name)
    return _compare(
        stub_surface(pyi), twin_surface(twin), engine_surface(pyx), ENGINE_ONLY.get(module_name, {})
    )


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_stub_matches_twin_and_engine(module: str) -> None:
    pyi, pyx = ENGINE_DIR / f"{module}.pyi", ENGINE_DIR / f"{module}.pyx"
    assert pyi.exists() and pyx.exists(), f"kincir_core must ship {pyi.name} and {pyx.name}"
    problems = _parity_problems(module, pyi, pyx, f"kincir_core.{module}_py")
    assert not problems, f"kincir_core/{module}.pyi disagrees:\n" + "\n".join(problems)


def _edited_engine(tmp_path: Path, pyx: Path, old: str, new: str) -> Path:
    """A copy of the engine's source (``pyx`` with its .pxd and .pxi files) with ``old``
    replaced by ``new`` in the one file that has it."""
    sources = [pyx, pyx.with_suffix(".pxd"), *sorted(pyx.parent.glob("*.pxi"))]
    holders = [path for path in sources if path.exists() and old in path.read_text()]
    assert len(holders) == 1, f"{old!r} is in {len(holders)} engine files: update this test"
    for path in sources:
        if path.exists() and path not in holders:
            (tmp_path / path.name).write_text(path.read_text())
    _edited(tmp_path, holders[0], old, new)
    return tmp_path / pyx.name


def _edited(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text, f"{old!r} is not in {source.name}: update this test"
    copy = tmp_path / source.name
    copy.write_text(text.replace(old, new, 1))
    return copy


STUB_BREAKAGES = [
    pytest.param(
        "_broker",
        "def try_receive_batch(self, max_messages: int)",
        "def try_receive_batch(self, limit: int)",
        id="parameter-renamed",
    ),
    pytest.param(
        "_broker",
        "def configure(self, overflow: int, capacity: int)",
        "def configure(self, overflow: int, capacity: int = ...)",
        id="parameter-made-optional",
    ),
    pytest.param(
        "_broker",
        "def take(self, limit: int)",
        "def take(self, *, limit: int)",
        id="parameter-made-keyword-only",
    ),
    pytest.param(
        "_broker", "    def try_receive(self) -> Message | None: ...\n", "", id="method-missing"
    ),
    pytest.param(
        "_broker", "def waiter_count(self)", "def waiter_counts(self)", id="method-misspelled"
    ),
    pytest.param(
        "_broker",
        "    def subscriber_count(self) -> int: ...\n",
        "    @property\n    def subscriber_count(self) -> int: ...\n",
        id="method-made-property",
    ),
    pytest.param(
        "_broker",
        "    def stop_accepting(self, end: bool = False) -> None: ...\n",
        "",
        id="twin-and-engine-method-missing",
    ),
    pytest.param(
        "_message",
        "def with_metadata(self, key: str, value: str)",
        "def with_metadata(self, key: str, val: str)",
        id="message-parameter-renamed",
    ),
    pytest.param(
        "_message",
        "    @classmethod\n    def new(",
        "    @staticmethod\n    def new(",
        id="classmethod-made-staticmethod",
    ),
    pytest.param(
        "_message",
        "    @property\n    def topic(self) -> str | None: ...\n",
        "",
        id="property-missing",
    ),
    pytest.param(
        "_broker",
        "    def subscriber_count(self) -> int: ...\n",
        "    def subscriber_count(self) -> int: ...\n    def _held(self) -> int: ...\n",
        id="declares-a-method-the-engine-keeps-c-level",
    ),
]


@pytest.mark.parametrize(("module", "old", "new"), STUB_BREAKAGES)
def test_a_broken_stub_is_caught(tmp_path: Path, module: str, old: str, new: str) -> None:
    """The parity check fails on a copy of the stub with one mistake in it."""
    pyi = _edited(tmp_path, ENGINE_DIR / f"{module}.pyi", old, new)
    problems = _parity_problems(
        module, pyi, ENGINE_DIR / f"{module}.pyx", f"kincir_core.{module}_py"
    )
    assert problems, f"a stub with {old!r} -> {new!r} passed the parity check"


def test_a_twin_or_engine_change_is_caught(tmp_path: Path) -> None:
    """A public method both the twin and the engine gain, a method the engine makes C-level, and
    a parameter the engine renames are each caught with the stub left as it is."""
    stub = stub_surface(ENGINE_DIR / "_broker.pyi")
    twin = importlib.import_module("kincir_core._broker_py")
    pyx = ENGINE_DIR / "_broker.pyx"
    known = ENGINE_ONLY["_broker"]
    assert not _compare(stub, twin_surface(twin), engine_surface(pyx), known)

    gained = twin_surface(twin)
    gained.classes["TopicLog"]["held"] = Member(
        "method", (("self", "POSITIONAL_OR_KEYWORD", False),)
    )
    engine = _edited_engine(
        tmp_path,
        pyx,
        "    def drained(self):",
        "    def held(self):\n        pass\n\n    def drained(self):",
    )
    problems = _compare(stub, gained, engine_surface(engine), known)
    assert any(p.startswith("TopicLog.held:") for p in problems), problems

    hidden = _edited_engine(
        tmp_path,
        pyx,
        "    def note_queue_full(self):",
        "    cdef void note_queue_full(self) noexcept:",
    )
    problems = _compare(stub, twin_surface(twin), engine_surface(hidden), known)
    assert any(p.startswith("TopicLog.note_queue_full:") for p in problems), problems

    renamed = _edited_engine(
        tmp_path,
        pyx,
        "    def remove_room_waiter(self, Waiter waiter):",
        "    def remove_room_waiter(self, Waiter room_waiter):",
    )
    problems = _compare(stub, twin_surface(twin), engine_surface(renamed), known)
    assert any(p.startswith("TopicLog.remove_room_waiter") for p in problems), problems
