"""The engine's import graph: no module of minicnn imports (directly or through others)
a module that imports it back, and the engine never imports the architecture zoo.

Every import statement counts, at module level or deferred inside a function: a deferred
import hides a cycle from the interpreter, not from a reader, who still cannot read one
module without the other.
"""
import ast
import pathlib

ENGINE = pathlib.Path(__file__).resolve().parent.parent / "minicnn"


def module_name(path):
    parts = list(path.relative_to(ENGINE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_modules():
    return {module_name(path): path for path in ENGINE.rglob("*.py")}


def imported_names(path, name, modules=()):
    """Every module named by an import statement anywhere in the file at ``path``
    (``modules``: the names that are modules, to tell ``from package import module``
    from ``from module import name``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                                      # from . import x
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from minicnn import nn" imports the module minicnn.nn; "from minicnn.nn.conv
            # import Conv2d" the module minicnn.nn.conv
            yield from (f"{base}.{alias.name}" for alias in node.names)
            if not any(f"{base}.{alias.name}" in modules for alias in node.names):
                yield base


def import_graph():
    """{module: the engine modules it imports}."""
    modules = engine_modules()
    return {name: {m for m in imported_names(path, name, modules) if m in modules and m != name}
            for name, path in modules.items()}


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            child = next(successors, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"} - {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_deferred_and_from_package_imports():
    graph = import_graph()
    assert "minicnn.tensor" in graph["minicnn.functional.math"]
    assert "minicnn.optim.checkpoint" in graph["minicnn.nn.transfer"]  # inside a function
    assert "minicnn.trace" in graph["minicnn.fold"]
    assert "minicnn.nn" in graph["minicnn.trace"] or "minicnn.nn.conv" in graph["minicnn.trace"]


def test_no_import_cycles_inside_minicnn():
    found = cycles(import_graph())
    assert not found, "import cycles in minicnn: " + "; ".join(" <-> ".join(c) for c in found)


# The tools that watch or rewrite a network: they sit above the layers.
TOOLS = ("minicnn.trace", "minicnn.flops", "minicnn.summary", "minicnn.report",
         "minicnn.fold", "minicnn.convolutionize")


def test_the_layers_never_import_the_tools():
    """nn/ holds layers; the tracer, the cost table and the rewrites built on them import
    nn, never the reverse (not even inside a function), so nn/ and the tools form no cycle
    even counted package by package."""
    graph = import_graph()
    offenders = sorted((name, tool) for name, imported in graph.items()
                       if name == "minicnn.nn" or name.startswith("minicnn.nn.")
                       for tool in imported if tool in TOOLS)
    assert not offenders, f"layers importing the tools: {offenders}"


# Programs built on top of the zoo, not part of the engine: the command line every
# architecture module runs (``python -m architectures.lenet5`` calls minicnn.cli, which
# looks the family up) and the demos.
PROGRAMS = ("minicnn.cli", "minicnn.detection.train", "minicnn.demos")


def test_the_engine_never_imports_the_architectures():
    engine = {name: path for name, path in engine_modules().items()
              if not any(name == p or name.startswith(p + ".") for p in PROGRAMS)}
    offenders = sorted(name for name, path in engine.items()
                       if any(m == "architectures" or m.startswith("architectures.")
                              for m in imported_names(path, name)))
    assert not offenders, f"minicnn modules importing architectures: {offenders}"
