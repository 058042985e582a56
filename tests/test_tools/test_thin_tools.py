"""Tools are thin: none edits ``sys.path`` or imports another tool's module.

A tool parses its arguments and calls the package (or ``benchmarks/``,
``projects/``): shared code lives there, importable from an installed
``oaml_mm``, never in a tool that others import through a hand-made path.
A measurable part of "thin": a tool defines no class, and no top-level function
besides ``parse_args`` and ``main`` is longer than :data:`HELPER_LINES` lines
(the option mapping and output of one command; a loop over inputs, a file format
or a result's assembly is longer and belongs in the package).
"""
import ast
import os
import os.path as osp
import tempfile
import unittest
from typing import List

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_PATH_EDITS = ('insert', 'append', 'extend', 'remove', 'pop', 'clear')
_LOADERS = ('run_path', 'spec_from_file_location', 'import_module',
            'SourceFileLoader', 'load_source')
#: Longest top-level helper function a tool may define (lines, decorators
#: excluded); parse_args and main are exempt.
HELPER_LINES = 30


def _tool_files(tools_dir: str) -> List[str]:
    return sorted(osp.join(d, f) for d, _, files in os.walk(tools_dir)
                  for f in files if f.endswith('.py'))


def _is_sys_path(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == 'path'
            and isinstance(node.value, ast.Name) and node.value.id == 'sys')


def tool_violations(tools_dir: str) -> List[str]:
    """``'<file>:<line>: <what>'`` for every sys.path edit or tool-to-tool import.

    Args:
        tools_dir (str): The ``tools/`` folder to scan (``*.py``, recursively).

    Returns:
        list[str]: Empty when every tool is thin.
    """
    files = _tool_files(tools_dir)
    names = {osp.splitext(osp.basename(p))[0] for p in files} - {'__init__'}
    found = []
    for path in files:
        own = osp.splitext(osp.basename(path))[0]
        others = names - {own}
        rel = osp.relpath(path, osp.dirname(tools_dir))
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            where = f'{rel}:{getattr(node, "lineno", 0)}'
            if isinstance(node, ast.Call) and isinstance(node.func,
                                                         ast.Attribute):
                if node.func.attr in _PATH_EDITS and _is_sys_path(
                        node.func.value):
                    found.append(f'{where}: sys.path.{node.func.attr}()')
                if node.func.attr in _LOADERS or (
                        isinstance(node.func, ast.Name)
                        and node.func.id in _LOADERS):
                    strings = [n.value for a in node.args for n in ast.walk(a)
                               if isinstance(n, ast.Constant)
                               and isinstance(n.value, str)]
                    hit = [s for s in strings
                           if osp.splitext(osp.basename(s))[0] in others]
                    if hit:
                        found.append(f'{where}: loads tool {hit[0]!r}')
            elif isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) \
                    else [node.target]
                for t in targets:
                    base = t.value if isinstance(t, ast.Subscript) else t
                    if _is_sys_path(base):
                        found.append(f'{where}: assigns sys.path')
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split('.')[0]
                    if top == 'tools' or top in others:
                        found.append(f'{where}: imports tool {alias.name}')
            elif isinstance(node, ast.ImportFrom) and not node.level:
                top = (node.module or '').split('.')[0]
                if top == 'tools' or top in others:
                    found.append(f'{where}: imports tool {node.module}')
    return found


def long_definitions(tools_dir: str,
                     limit: int = HELPER_LINES) -> List[str]:
    """``'<file>:<line>: <what>'`` for every class and over-long helper in a tool.

    Args:
        tools_dir (str): The ``tools/`` folder to scan (``*.py``, recursively).
        limit (int): Longest top-level function allowed besides ``parse_args``
            and ``main``, in lines.

    Returns:
        list[str]: Empty when every tool keeps to the rule.
    """
    found = []
    for path in _tool_files(tools_dir):
        rel = osp.relpath(path, osp.dirname(tools_dir))
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        for node in tree.body:
            where = f'{rel}:{node.lineno}'
            if isinstance(node, ast.ClassDef):
                found.append(f'{where}: defines class {node.name}')
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and node.name not in ('parse_args', 'main'):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f'{where}: {node.name}() is {lines} lines '
                                 f'(at most {limit})')
    return found


class TestThinTools(unittest.TestCase):

    def test_no_tool_edits_sys_path_or_imports_a_tool(self):
        self.assertEqual(tool_violations(osp.join(ROOT, 'tools')), [])

    def test_no_tool_holds_a_class_or_a_long_helper(self):
        self.assertEqual(long_definitions(osp.join(ROOT, 'tools')), [])

    def test_the_length_check(self):
        helper = 'def helper(x):\n' + '    x += 1\n' * 30 + '    return x\n'
        files = {
            'a.py': 'class Tool:\n    pass\n',
            'b.py': helper,
            'sub/c.py': helper.replace('helper', 'main') + helper.replace(
                'helper', 'parse_args'),
            'd.py': 'def short(x):\n' + '    x += 1\n' * 28 + '    return x\n',
        }
        with tempfile.TemporaryDirectory() as d:
            tools = osp.join(d, 'tools')
            for rel, text in files.items():
                os.makedirs(osp.dirname(osp.join(tools, rel)), exist_ok=True)
                with open(osp.join(tools, rel), 'w') as f:
                    f.write(text)
            self.assertEqual(long_definitions(tools), [
                'tools/a.py:1: defines class Tool',
                'tools/b.py:1: helper() is 32 lines (at most 30)'])

    def test_the_check_finds_each_kind(self):
        bad = {
            'a.py': 'import sys\nsys.path.insert(0, "x")\n',
            'b.py': 'import sys\nsys.path[:0] = ["x"]\n',
            'sub/c.py': 'import a  # another tool\n',
            'sub/d.py': 'from tools.sub import c\n',
            'e.py': 'import runpy\nrunpy.run_path("tools/a.py")\n',
            'f.py': 'import sys, os\nsys.path += ["y"]\nimport os.path\n',
            'ok.py': 'import os.path as osp\nfrom oaml_mm.apis import x\n'
                     'import runpy\nrunpy.run_path("oaml_mm/utils/m.py")\n',
        }
        with tempfile.TemporaryDirectory() as d:
            tools = osp.join(d, 'tools')
            for rel, text in bad.items():
                os.makedirs(osp.dirname(osp.join(tools, rel)), exist_ok=True)
                with open(osp.join(tools, rel), 'w') as f:
                    f.write(text)
            found = tool_violations(tools)
        self.assertEqual(sorted(found), [
            'tools/a.py:2: sys.path.insert()',
            'tools/b.py:2: assigns sys.path',
            "tools/e.py:2: loads tool 'tools/a.py'",
            'tools/f.py:2: assigns sys.path',
            'tools/sub/c.py:1: imports tool a',
            'tools/sub/d.py:1: imports tool tools.sub',
        ])


if __name__ == '__main__':
    unittest.main()
