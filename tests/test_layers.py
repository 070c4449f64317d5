"""The layout's rules (issue 23): the layers import-linter holds (pyproject.toml
`[tool.importlinter]`), no import loop between any two modules or rooms, and importing any
module builds nothing (no Faust app, no environment read, no patch): `streams.build` alone
assembles a worker. A new import across a layer fails here, naming the contract and the import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contract", "rules", "edi", "streams")


def test_lint_imports_keeps_every_contract():
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    done = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one node (Tarjan): the import loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            scc = []
            while True:
                top = stack.pop()
                on.discard(top)
                scc.append(top)
                if top == node:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)


def test_no_import_loop_between_modules():
    graph = _graph()
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i.split(".")[0] in PACKAGES}
             for m in graph.modules}
    assert _cycles(edges) == []


def test_no_import_loop_between_rooms():
    """Rooms: the top-level packages and the packages of `streams` (a module of `streams`
    itself, such as `streams.settings`, is its own room)."""
    graph = _graph()

    def room(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2]) if parts[0] == "streams" and len(parts) > 1 else parts[0]

    edges: dict[str, set[str]] = {}
    for m in graph.modules:
        for i in graph.find_modules_directly_imported_by(m):
            if i.split(".")[0] in PACKAGES and room(i) != room(m):
                edges.setdefault(room(m), set()).add(room(i))
    assert _cycles(edges) == []


def test_importing_every_module_builds_no_app():
    """In a fresh interpreter, every module of ours imported: no Faust app exists, Faust's
    classes are as shipped, and no settings were read (an invalid CLAIMS_ variable would
    fail any `Settings()` made on import)."""
    code = """
import gc, importlib, pkgutil
import faust, faust.transport.consumer as c, faust.app.base as b
before = {name: dict(vars(cls)) for name, cls in (("Consumer", c.Consumer), ("App", b.App))}
for root in ("contract", "rules", "edi", "streams"):
    pkg = importlib.import_module(root)
    for m in pkgutil.walk_packages(pkg.__path__, root + "."):
        importlib.import_module(m.name)
apps = [o for o in gc.get_objects() if isinstance(o, faust.App)]
patched = [name for name, cls in (("Consumer", c.Consumer), ("App", b.App)) if dict(vars(cls)) != before[name]]
print(len(apps), patched)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "CLAIMS_PARTITIONS": "not a number"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[-2] == "0 []"


def test_one_process_assembles_two_independent_workers():
    """`build_worker` is the one place a worker is made, and it can be called twice: each
    worker has its own app, runtime, topics, agents, timers and routes (nothing is started)."""
    from contract import topics
    from streams.build import build_worker
    from streams.settings import Settings

    one = build_worker(Settings(app_id="claims-one", partitions=2, web_port=7001))
    two = build_worker(Settings(app_id="claims-two", partitions=3, web_port=7002))
    assert one.app is not two.app and one.runtime is not two.runtime
    assert (one.app.conf.id, two.app.conf.id) == ("claims-one", "claims-two")
    assert sorted(one.app.agents) == sorted(two.app.agents) == ["adjudicate", "enrich", "intake", "remittance"]
    assert {a.channel.get_topic_name() for a in one.app.agents.values()} == \
        {"claims.lines.submitted", "claims.internal.assembled", "claims.internal.priced", "claims.internal.decided"}
    assert one.topic(topics.SUBMITTED).partitions == 2 and two.topic(topics.SUBMITTED).partitions == 3
    routes = {path for path in one.app.web.views}
    assert "/v1/claims" in routes and "/readyz" in routes and routes == set(two.app.web.views)
    assert len(one.app._app_tasks) == len(two.app._app_tasks) > 0  # noqa: SLF001 - timers and tasks
