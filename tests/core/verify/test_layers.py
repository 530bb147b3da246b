"""The verify package is layered: each module imports only modules below it, so it has no import cycle.

The order is the map in pangea_p2p/core/verify/__init__.py; imports under ``if TYPE_CHECKING:`` count too,
since a cycle of type-only imports still says two modules are one thing.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pangea_p2p.core.verify as package

PACKAGE = "pangea_p2p.core.verify"
DIRECTORY = Path(package.__file__).parent

# lowest first: the order of the package docstring's map
LAYERS = (
    "format", "merkle", "config", "replay",
    "binding", "receipts", "checks", "execution", "delegation", "tree",
    "voting", "commit_reveal", "spotcheck", "fraud",
)


def package_imports(source: str) -> set[str]:
    """The modules of the verify package that ``source`` (a module of it) imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from pangea_p2p.core.verify import tree`` imports the module ``tree``
            names = [node.module] if node.module != PACKAGE else [f"{PACKAGE}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative: from . import x, from .x import y
            names = [f"{PACKAGE}.{node.module}"] if node.module else [f"{PACKAGE}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n.removeprefix(f"{PACKAGE}.").split(".")[0] for n in names if n.startswith(f"{PACKAGE}."))
    return found


def layering_problems(imports: dict[str, set[str]], order: tuple[str, ...]) -> list[str]:
    """Every module listed, and importing only modules listed before it."""
    problems = [f"{m}.py is not placed in the layers" for m in sorted(set(imports) - set(order))]
    problems += [f"{m} is listed but does not exist" for m in order if m not in imports]
    rank = {m: i for i, m in enumerate(order)}
    for module, deps in sorted(imports.items()):
        for dep in sorted(deps):
            if module in rank and rank.get(dep, len(order)) >= rank[module]:
                problems.append(f"{module}.py imports {dep}, which is not below it")
    return problems


def current_imports() -> dict[str, set[str]]:
    return {
        p.stem: package_imports(p.read_text()) for p in sorted(DIRECTORY.glob("*.py")) if p.stem != "__init__"
    }


def test_every_module_imports_only_the_layers_below_it() -> None:
    assert layering_problems(current_imports(), LAYERS) == []


def test_the_package_map_lists_the_layers_in_order() -> None:
    assert package.__doc__ is not None
    listed = tuple(re.findall(r"^ {4}(\w+)\.py ", package.__doc__, flags=re.M))
    assert listed == LAYERS


def test_the_checker_finds_an_upward_import_a_type_only_cycle_and_an_unplaced_module() -> None:
    upward = "from pangea_p2p.core.verify.tree import verify_tree\n"
    type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pangea_p2p.core.verify import receipts\n"
    imports = {"binding": package_imports(upward), "format": set(), "receipts": {"binding"}, "tree": set()}
    imports["binding"] |= package_imports(type_only)
    imports["extra"] = package_imports("from .format import VERSION\n")
    assert imports["extra"] == {"format"}
    assert layering_problems(imports, ("format", "binding", "receipts", "tree")) == [
        "extra.py is not placed in the layers",
        "binding.py imports receipts, which is not below it",
        "binding.py imports tree, which is not below it",
    ]
    assert layering_problems({"format": set(), "binding": {"format"}}, ("format", "binding")) == []
