"""The figures of issue 14's closing note, recomputed from the source: the layout, the
longest functions and the import cycles, before the redesign and now.

    python tools/redesign_figures.py                 # base 5abe23e against the working tree
    python tools/redesign_figures.py --base COMMIT   # another starting point
    python tools/redesign_figures.py --now FOLDER    # "now" = the code in FOLDER

Everything is read with ``ast`` (nothing is imported), the base commit through ``git show``,
so the script runs on a checkout with no built extensions and leaves no files behind. It
prints Markdown:

* **layout**: one line per module of ``minicnn/`` and ``architectures/``, the first
  paragraph of its docstring (a module without one is listed as such: a gap to fix);
* **longest functions**: the ten longest ``def`` bodies (first to last line) under
  ``minicnn/`` and ``architectures/``;
* **import cycles** between the top-level pieces of the code: each subpackage of
  ``minicnn`` (``nn``, ``functional``, ...), each top-level module (``tensor``,
  ``summary``, ...), the package's own ``__init__``, and ``architectures`` as one piece.
  Module-level imports (run when the module loads) and function-level imports (run when
  the function is called, the usual way to break a cycle at load time) are counted apart:
  a cycle of module-level imports can fail at import time; a cycle that needs a function-
  level edge cannot, but still ties the pieces together for a reader. What a module
  imports under ``if __name__ == "__main__":`` belongs to the program, not to the module,
  and is left out.
"""
import argparse
import ast
import os
import re
import subprocess
import sys

ROOTS = ("minicnn", "architectures")
BASE_COMMIT = "5abe23e"


# ----------------------------------------------------------------------------- reading source

class WorkingTree:
    """The files of ``ROOTS`` as they are on disk under ``root``."""

    def __init__(self, root):
        self.root = root
        self.label = "now (working tree)"

    def python_files(self):
        for base in ROOTS:
            for folder, _, names in os.walk(os.path.join(self.root, base)):
                for name in sorted(names):
                    if name.endswith(".py"):
                        yield os.path.relpath(os.path.join(folder, name), self.root)

    def read(self, path):
        with open(os.path.join(self.root, path), encoding="utf-8") as file:
            return file.read()


class Commit:
    """The files of ``ROOTS`` as one commit holds them (``git ls-tree`` / ``git show``)."""

    def __init__(self, root, commit):
        self.root, self.commit = root, commit
        self.label = f"base {commit}"

    def _git(self, *args):
        return subprocess.run(("git", "-C", self.root) + args, check=True,
                              capture_output=True, text=True).stdout

    def python_files(self):
        listed = self._git("ls-tree", "-r", "--name-only", self.commit, "--", *ROOTS)
        return sorted(p for p in listed.splitlines() if p.endswith(".py"))

    def read(self, path):
        return self._git("show", f"{self.commit}:{path}")


def parsed_modules(source):
    """{path: ast.Module} for every Python file of ``source``."""
    return {path: ast.parse(source.read(path), filename=path) for path in source.python_files()}


def module_name(path):
    """``minicnn/nn/conv.py`` -> ``minicnn.nn.conv``; a package's ``__init__`` -> the package."""
    parts = path[:-len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# ----------------------------------------------------------------------------- (a) layout

def layout(modules):
    """[(path, the first paragraph of its docstring on one line, or None)] in path order."""
    rows = []
    for path, tree in sorted(modules.items()):
        doc = (ast.get_docstring(tree) or "").strip()
        rows.append((path, _first_sentences(" ".join(doc.split("\n\n")[0].split()))
                     if doc else None))
    return rows


def _first_sentences(paragraph, limit=160):
    """The paragraph, or as many of its first sentences as fit in ``limit`` characters
    (at least the first; a sentence ends at ". " before a capital, not after "et al.")."""
    ends = [m.end() for m in re.finditer(r"(?<!\bal)(?<!\be\.g)[.:;] (?=[A-Z(`])", paragraph)]
    cut = max([end for end in ends if end <= limit] or ends[:1] or [len(paragraph)])
    return paragraph if len(paragraph) <= limit else paragraph[:cut].rstrip()


# ----------------------------------------------------------------------------- (b) longest

def longest_functions(modules, count=10):
    """The ``count`` longest functions and methods: [(lines, path, qualified name)]."""
    rows = []
    for path, tree in modules.items():
        for node, qualified in _functions(tree):
            rows.append((node.end_lineno - node.lineno + 1, path, qualified))
    return sorted(rows, key=lambda row: (-row[0], row[1], row[2]))[:count]


def _functions(tree, prefix=""):
    """(def node, dotted name inside its module) for every function, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, prefix + node.name
            yield from _functions(node, prefix + node.name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


# ----------------------------------------------------------------------------- (c) cycles

def piece(module, packages):
    """The top-level piece a dotted module name belongs to (None: outside the code)."""
    parts = module.split(".")
    if parts[0] == "architectures":
        return "architectures"
    if parts[0] != "minicnn":
        return None
    if len(parts) == 1:
        return "minicnn/__init__"
    return parts[1] + ("/" if "minicnn." + parts[1] in packages else "")


def imported_modules(node, importer, is_package, known):
    """Dotted names an ``import`` / ``from ... import`` statement loads. ``from P import x``
    loads ``P.x`` when that is a module of the code, else ``P``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:                                        # relative: from the importer's package
        package = importer.split(".")
        package = package if is_package else package[:-1]
        package = package[:len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module
    names = [f"{base}.{alias.name}" for alias in node.names]
    return [name if name in known else base for name in names]


def import_edges(modules):
    """{("module" | "function", from piece, to piece): [importing module, ...]}.

    An import statement inside a ``def`` (at any depth) is function-level; every other one,
    including those under ``if`` or ``try`` at module level, runs at load time.
    """
    known = {module_name(path) for path in modules}
    packages = {module_name(path) for path in modules if path.endswith("__init__.py")}
    edges = {}
    for path, tree in modules.items():
        importer = module_name(path)
        source_piece = piece(importer, packages)
        for node, level in _imports(tree, "module"):
            for target in imported_modules(node, importer, path.endswith("__init__.py"), known):
                target_piece = piece(target, packages)
                if target_piece and target_piece != source_piece:
                    edges.setdefault((level, source_piece, target_piece), set()).add(importer)
    return edges


def _imports(tree, level):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, level
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _imports(node, "function")
        elif not _runs_as_program(node):
            yield from _imports(node, level)


def _runs_as_program(node):
    """``if __name__ == "__main__":`` — a module run as a program (every architecture ends
    ``main()`` from minicnn.cli there). What it imports is the program's, not the module's:
    nothing that imports the module runs it, so it is left out of the graph."""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def strongly_connected(graph):
    """Tarjan's algorithm: the components of more than one piece (every cycle lies in one)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def two_piece_cycles(graph):
    """Pairs (a, b) that import each other directly: the cycles a reader trips over first."""
    return sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ()))


def cycles(edges, levels):
    """(components, mutual pairs) of the graph made of the edges of ``levels``."""
    graph = {}
    for (level, a, b) in edges:
        if level in levels:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    return strongly_connected(graph), two_piece_cycles(graph)


# ----------------------------------------------------------------------------- report

def report_layout(modules):
    lines = ["## The layout (one line per module: the first paragraph of its docstring)", "",
             "```"]
    rows = layout(modules)
    width = max(len(path) for path, _ in rows)
    lines += [f"{path:<{width}}  {doc or '(NO DOCSTRING)'}" for path, doc in rows]
    return lines + ["```", ""]


def report_longest(label, modules):
    lines = [f"### {label}", "", "```"]
    lines += [f"{length:4d}  {path}:{name}" for length, path, name in longest_functions(modules)]
    return lines + ["```", ""]


def report_cycles(label, modules):
    edges = import_edges(modules)
    lines = [f"### {label}", ""]
    for title, levels in (("module-level imports only", {"module"}),
                          ("module- and function-level imports", {"module", "function"})):
        components, pairs = cycles(edges, levels)
        lines.append(f"* {title}: {len(components)} cycle group(s)"
                     + ("" if components else "."))
        for component in components:
            lines.append(f"    * {{{', '.join(component)}}}")
        for a, b in pairs:
            lines.append(f"    * {a} ⇄ {b}: " + _edge_text(edges, a, b, levels) + "; "
                         + _edge_text(edges, b, a, levels))
    return lines + [""]


def report_zoo_imports(label, modules):
    """Which modules of the engine import the architecture zoo, and how."""
    edges = import_edges(modules)
    found = sorted((level, a, sorted(importers)) for (level, a, b), importers in edges.items()
                   if b == "architectures" and a != "architectures")
    lines = [f"* {label}: " + ("none" if not found else "")]
    for level, a, importers in found:
        lines.append(f"    * {a} → architectures ({level}-level, in {', '.join(importers)})")
    return lines


def _edge_text(edges, a, b, levels):
    parts = []
    for level in sorted(levels, reverse=True):        # module before function
        importers = edges.get((level, a, b))
        if importers:
            parts.append(f"{a} → {b} ({level}-level, in {', '.join(sorted(importers))})")
    return " and ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=BASE_COMMIT, help="commit before the redesign")
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), help="the repository (default: this script's)")
    parser.add_argument("--now", help="folder holding the code to call 'now' (default: the "
                        "repository's working tree), e.g. an exported merge result")
    args = parser.parse_args(argv)
    before = parsed_modules(Commit(args.root, args.base))
    now = parsed_modules(WorkingTree(args.now or args.root))
    lines = report_layout(now)
    lines += ["## The ten longest functions (ast: first to last line of the def)", ""]
    lines += report_longest(f"before: {args.base}", before) + report_longest("now", now)
    lines += ["## Import cycles between the top-level pieces", ""]
    lines += report_cycles(f"before: {args.base}", before) + report_cycles("now", now)
    lines += ["## Modules of minicnn that import architectures/", ""]
    lines += (report_zoo_imports(f"before: {args.base}", before) + report_zoo_imports("now", now)
              + [""])
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
