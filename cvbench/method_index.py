"""The built-in methods by name, read from the source without importing anything: what
`cvbench list`, the suite checks and the method registry need before a method is built.

A method module registers with `@register_method("name", family=..., description=...)` on a
class or function, or `register_method("name", ...)(Class)`; this module finds those calls in
the baselines and deep packages and every task's methods.py with `ast`, so that listing
methods imports neither the methods nor torch. The registry (cvbench.methods) imports a
method's module when the method is built.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

PLUGIN_MODULES = ("cvbench.baselines", "cvbench.deep")


def first_paragraph(doc: str) -> str:
    """A docstring's first paragraph on one line (its summary, however it wraps)."""
    return " ".join(doc.strip().split("\n\n")[0].split())


@dataclass(frozen=True)
class MethodInfo:
    """What `cvbench list` and the suite checks need of a built-in method, read from the
    source (its @register_method call) without importing it (or torch)."""

    name: str
    family: str
    description: str
    module: str


def _source_modules() -> list[tuple[str, Path]]:
    """(import name, file) of every module that may register a built-in method: the
    baselines and deep packages and every task's methods.py."""
    from .tasks import method_modules, task_folder

    out = []
    for package in PLUGIN_MODULES:
        spec = importlib.util.find_spec(package)  # imports `cvbench` only, not the package
        for folder in spec.submodule_search_locations or ():
            out += [(f"{package}.{p.stem}", p) for p in sorted(Path(folder).glob("*.py")) if p.stem != "__init__"]
    for mod in method_modules():
        out.append((mod, task_folder(mod.split(".")[2]) / "methods.py"))
    return out


def _registrations(module: str, path: Path) -> list[MethodInfo]:
    """The @register_method(...) decorators and register_method(...)(Name) calls of a file.
    A file that never names register_method registers nothing: it is not parsed (two thirds
    of the source bytes; parsing was most of `cvbench list`'s start-up)."""
    text = path.read_text(encoding="utf-8")
    if "register_method" not in text:
        return []
    tree = ast.parse(text)
    top = tree.body  # built-in methods register at module level (a test compares the registry)
    docs = {n.name: first_paragraph(ast.get_docstring(n) or "") for n in top
            if isinstance(n, (ast.ClassDef, ast.FunctionDef))}

    def info(call: ast.Call, target: str) -> MethodInfo | None:
        if not (isinstance(call.func, ast.Name) and call.func.id == "register_method" and call.args):
            return None
        kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
        name = ast.literal_eval(call.args[0])
        family = kw.get("family", call.args[1].value if len(call.args) > 1 else "classical")
        return MethodInfo(name, family, kw.get("description") or docs.get(target, ""), module)

    out = []
    for node in top:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            out += [i for d in node.decorator_list if isinstance(d, ast.Call) and (i := info(d, node.name))]
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = node.value  # register_method(...)(Name)
            if isinstance(call.func, ast.Call) and call.args:
                target = call.args[0].id if isinstance(call.args[0], ast.Name) else ""
                if (i := info(call.func, target)) is not None:
                    out.append(i)
    return out


@functools.cache
def method_index() -> dict[str, MethodInfo]:
    """Every built-in method by name, from the source alone (nothing imported)."""
    return {i.name: i for mod, path in _source_modules() for i in _registrations(mod, path)}
