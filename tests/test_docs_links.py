"""Relative links in the Markdown pages (README, docs/, configs/, projects/) resolve.

Every ``[text](target)`` and ``![alt](target)`` whose target is not a URL must name a
file or folder that exists, relative to the page; a ``#fragment`` into a Markdown page
must name one of its headings (GitHub's anchors: lower case, punctuation dropped,
spaces as hyphens).
"""
import os
import os.path as osp
import re
import unittest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: Folders that hold no pages of ours (environments, data, build outputs, copies).
SKIP_DIRS = {'.venv', '.git', 'data', 'work_dirs', 'build', 'dist', '.mim',
             '.pytest_cache', '.hypothesis', 'node_modules'}
LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
FENCE = re.compile(r'^(```|~~~).*?^\1', re.S | re.M)
INLINE_CODE = re.compile(r'`[^`\n]*`')


def markdown_pages(root=ROOT):
    """Every ``*.md`` below ``root`` outside :data:`SKIP_DIRS`, sorted."""
    pages = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS
                         and not x.endswith('.egg-info'))
        pages += [osp.join(d, f) for f in files if f.endswith('.md')]
    return sorted(pages)


def anchors(page):
    """GitHub's heading anchors of a Markdown page."""
    with open(page, encoding='utf-8') as f:
        text = FENCE.sub('', f.read())
    out = set()
    for line in text.splitlines():
        m = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if m:
            title = re.sub(r'[^\w\- ]', '', m.group(1).lower().replace('`', ''))
            out.add(title.replace(' ', '-'))
    return out


def broken_links(page):
    """``(target, why)`` for each relative link of ``page`` that does not resolve."""
    with open(page, encoding='utf-8') as f:
        text = INLINE_CODE.sub('', FENCE.sub('', f.read()))
    bad = []
    for target in LINK.findall(text):
        if re.match(r'[a-z][a-z0-9+.-]*:', target, re.I):
            continue  # http:, https:, mailto:
        path, _, frag = target.partition('#')
        dest = osp.normpath(osp.join(osp.dirname(page), path)) if path else page
        if not osp.exists(dest):
            bad.append((target, 'no such file'))
        elif frag and dest.endswith('.md') and frag not in anchors(dest):
            bad.append((target, 'no such heading'))
    return bad


class TestDocsLinks(unittest.TestCase):

    def test_checker_finds_a_broken_link_and_heading(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            with open(osp.join(tmp, 'b.md'), 'w') as f:
                f.write('# The `b` page: one\n')
            page = osp.join(tmp, 'a.md')
            with open(page, 'w') as f:
                f.write('[ok](b.md#the-b-page-one) [gone](c.md) '
                        '[head](b.md#two) [web](https://x.org/y.md) '
                        '`[code](d.md)`\n```\n[fenced](e.md)\n```\n')
            self.assertEqual(broken_links(page), [
                ('c.md', 'no such file'), ('b.md#two', 'no such heading')])

    def test_relative_links_resolve(self):
        pages = markdown_pages()
        self.assertIn(osp.join(ROOT, 'README.md'), pages)
        bad = {osp.relpath(p, ROOT): broken_links(p) for p in pages}
        self.assertEqual({p: b for p, b in bad.items() if b}, {})


if __name__ == '__main__':
    unittest.main()
