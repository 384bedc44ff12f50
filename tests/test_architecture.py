"""The shape of the code: layers point one way (dags/ -> plugins/ -> include/), Airflow stays behind one seam in
include/, flows are looked up in their registry (never imported by a string), and functions stay short."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = {p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists()}
# the one seam between include/ and Airflow (connections, Variables, the demo's DAG runs)
AIRFLOW_SEAM = {"include/bridge/runtime.py"}
MAX_FUNCTION_LINES = 80
SEED_DATA = {("include/sandbox/crm/seed.py", "seed_demo_company")}  # the sandboxes' seed data may be long


def python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def imported_modules(path: Path, *, command_line: bool = True) -> set[str]:
    """Every module a file imports, at the top or inside a function (without its `if __name__ == "__main__":`
    block when command_line is false)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if not command_line:
        tree.body = [n for n in tree.body if not _is_main_block(n)]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _is_main_block(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_include_imports_neither_plugins_nor_airflow_outside_the_seam():
    wrong = []
    for path in python_files("include"):
        modules = imported_modules(path)
        wrong += [f"{rel(path)} imports the plugin {m}: plugins/ import include/, never back"
                  for m in sorted(modules) if m.split(".")[0] in PLUGIN_PACKAGES]
        if rel(path) not in AIRFLOW_SEAM:
            wrong += [f"{rel(path)} imports {m}: go through include/bridge/runtime.py"
                      for m in sorted(modules) if m.split(".")[0] == "airflow"]
    assert not wrong, "\n".join(wrong)


def test_the_common_layer_does_not_import_flows():
    # a module's command line (python -m include.bridge.doctor) is such a caller: it may look the registry up
    wrong = [f"{rel(path)} imports {m}: the caller hands in what it needs from the registry"
             for path in python_files("include/bridge")
             for m in sorted(imported_modules(path, command_line=False))
             if m.startswith("include.flows")]
    assert not wrong, "\n".join(wrong)


def test_nothing_is_imported_by_a_string():
    # (Airflow's local settings preload libraries named by a setting, BRIDGE_PRELOAD_MODULES: never a flow)
    wrong = [rel(path) for path in python_files("include", "plugins", "dags")
             if rel(path) != "plugins/airflow_local_settings.py"
             and {"importlib", "importlib.import_module"} & imported_modules(path)
             or "__import__(" in path.read_text(encoding="utf-8")]
    assert not wrong, f"{wrong} import by a string: look flows up in include.flows.FLOWS"


def test_every_flow_module_is_in_the_registry():
    import importlib

    from include.bridge.flow import Flow
    from include.flows import FLOWS

    assert all(isinstance(f, Flow) and name == f.name for name, f in FLOWS.items())
    for path in (ROOT / "include" / "flows").glob("*.py"):
        if path.stem != "__init__":
            module = importlib.import_module(f"include.flows.{path.stem}")
            flows = [v for v in vars(module).values() if isinstance(v, Flow)]
            assert flows and all(FLOWS.get(f.name) is f for f in flows), f"{rel(path)}: its flow is not registered"


def test_no_function_is_longer_than_80_lines():
    long = [f"{rel(path)}: {node.name} has {node.end_lineno - node.lineno + 1} lines"
            for path in python_files("include", "plugins", "dags")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and (rel(path), node.name) not in SEED_DATA]
    assert not long, "\n".join(long)
