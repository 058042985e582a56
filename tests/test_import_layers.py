"""The package's import graph has no circles, between layers or between modules."""
import ast
import os
import os.path as osp
import unittest
from collections import defaultdict
from typing import Dict, List, Set

ROOT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'oaml_mm')


def import_graph() -> Dict[str, Set[str]]:
    """Module -> oaml_mm modules it imports (module level and inside functions)."""
    edges: Dict[str, Set[str]] = defaultdict(set)
    base = osp.dirname(ROOT)
    for dirpath, dirs, files in os.walk(ROOT):
        # Not the package: oaml_mm/.mim holds copies of configs/ and tools/.
        dirs[:] = [d for d in dirs if not d.startswith('.')]
        for f in files:
            if not f.endswith('.py'):
                continue
            path = osp.join(dirpath, f)
            mod = osp.relpath(path, base)[:-3].replace(os.sep, '.')
            is_pkg = mod.endswith('.__init__')
            mod = mod[:-len('.__init__')] if is_pkg else mod
            pkg = mod if is_pkg else mod.rsplit('.', 1)[0]
            with open(path, encoding='utf-8') as fh:
                tree = ast.parse(fh.read())
            for node in ast.walk(tree):
                targets: List[str] = []
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        parts = pkg.split('.')
                        parts = parts[:len(parts) - node.level + 1]
                        target = '.'.join(parts + ([node.module]
                                                   if node.module else []))
                    else:
                        target = node.module or ''
                    targets = [target]
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                edges[mod].update(t for t in targets
                                  if t.startswith('oaml_mm.'))
    return edges


def layer(mod: str) -> str:
    parts = mod.split('.')
    return '.'.join(parts[:2])


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle of ``graph`` as a node list, or [] (depth-first search)."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(n: str) -> List[str]:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


class TestImportLayers(unittest.TestCase):

    def test_layers_form_no_circle(self):
        # The package root (oaml_mm/__init__, oaml_mm.setup_env) registers
        # everything and is allowed above every layer.
        top = defaultdict(set)
        for mod, targets in import_graph().items():
            for t in targets:
                a, b = layer(mod), layer(t)
                if a != b and a != 'oaml_mm.setup_env':
                    top[a].add(b)
        self.assertEqual(find_cycle(top), [])

    def test_modules_form_no_circle(self):
        graph = import_graph()
        # A package's __init__ re-exporting its modules is not a circle: drop the
        # edges from a package to its own modules, and every edge into an
        # __init__ stands for the modules it re-exports.
        clean = {m: {t for t in ts if not t.startswith(m + '.')}
                 for m, ts in graph.items()}
        self.assertEqual(find_cycle(clean), [])

    def test_detects_a_circle(self):
        self.assertEqual(find_cycle({'a': {'b'}, 'b': {'a'}}), ['a', 'b', 'a'])
        self.assertEqual(find_cycle({'a': {'b'}, 'b': set()}), [])


if __name__ == '__main__':
    unittest.main()
