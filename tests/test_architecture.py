"""The import rules of the architecture (README, "Architecture"), read from the source.

Each package may import only from the packages below it; `handlers/` imports nothing of ours,
`store/` nothing above it, only the command line and the demo reach the stand-in for Codat, and
no code outside `store/` reaches into a backend.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("processor", "handlers", "store")

# Lower layers first; a module may import from its own layer's package and from lower layers.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("handlers",),
    ("store",),
    ("processor.clock", "processor.config", "processor.logs", "processor.metrics"),
    ("processor.codat",),
    ("processor.intake", "processor.sandbox"),
    ("processor.work",),
    ("processor.http",),
    ("processor.app",),
    ("processor.demo",),
    ("processor.cli", "processor"),
    ("processor.__main__",),
)
MAY_IMPORT_SANDBOX = ("processor.sandbox", "processor.cli", "processor.demo")
BACKENDS = ("store.sqlite", "store.postgres")


def imports_of(source: str) -> Iterator[str]:
    """Every module of ours that `source` imports (`from a import b` yields a and a.b)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def modules() -> Iterator[tuple[str, str]]:
    for root in OURS:
        for path in sorted((ROOT / root).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield name.removesuffix(".__init__"), path.read_text()


def package(module: str) -> str:
    """The architectural package a module belongs to: its longest prefix in LAYERS."""
    known = [name for layer in LAYERS for name in layer]
    found = [name for name in known if module == name or module.startswith(name + ".")]
    return max(found, key=len)


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if package(module) in names)


def violations() -> list[str]:
    found = []
    for module, source in modules():
        for imported in set(imports_of(source)):
            if imported.split(".")[0] not in OURS:
                continue
            found += [f"{module} imports {imported}: {why}" for why in broken(module, imported)]
    return sorted(found)


def broken(module: str, imported: str) -> list[str]:
    reasons = []
    # `from processor import clock` names the top package only to reach a module below it.
    upwards = package(imported) != package(module) and layer(imported) >= layer(module)
    if upwards and imported != "processor":
        reasons.append(f"{package(imported)} is not below {package(module)}")
    if package(module) == "handlers" and package(imported) != "handlers":
        reasons.append("handlers/ is pure: it imports nothing of ours")
    if imported.startswith("processor.sandbox") and package(module) not in MAY_IMPORT_SANDBOX:
        reasons.append("only the command line and the demo use the stand-in for Codat")
    backend = any(imported == name or imported.startswith(name + ".") for name in BACKENDS)
    if backend and not module.startswith("store"):
        reasons.append("outside store/, code uses the contract (`store`), never a backend")
    return reasons


def test_every_import_follows_the_architecture() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("module", "imported", "rule"),
    [
        ("handlers.transitions", "store", "handlers/ is pure"),
        ("store.sqlite.events", "processor.clock", "not below store"),
        ("processor.work.worker", "processor.sandbox.sender", "only the command line"),
        ("processor.http.queries", "store.sqlite", "never a backend"),
        ("processor.work.worker", "store.postgres.connected", "never a backend"),
        ("processor.codat.client", "processor.work.effects", "not below processor.codat"),
        ("processor.intake.writer", "processor.http.errors", "not below processor.intake"),
    ],
)
def test_a_forbidden_import_is_caught(module: str, imported: str, rule: str) -> None:
    reasons = broken(module, imported)
    assert any(rule in reason for reason in reasons), reasons


def test_allowed_imports_pass() -> None:
    for module, imported in [
        ("processor.cli.serve", "processor.app"),
        ("processor.work.worker", "store"),
        ("processor.http.webhooks", "processor.intake.signature"),
        ("processor.demo", "processor.sandbox"),
        ("store.opening", "store.sqlite"),
        ("store.opening", "store.postgres"),
        ("processor.config", "store.sqlite_path"),
    ]:
        assert broken(module, imported) == [], (module, imported)
