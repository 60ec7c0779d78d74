#!/usr/bin/env python
"""Write the generated blocks of the README and docs pages (arch tables, package layout).

    python tools/misc/gen_docs.py [--check]

A thin wrapper over :func:`pvt_mm.doc_blocks.main`: the pages' ``<!-- generated:NAME:begin -->``
/ ``end`` blocks are regenerated from ``pvt_mm/models/backbones/archs.py`` and the modules' docstrings; ``--check``
writes nothing and exits 1 naming each page that differs (the suite runs it).
"""
import sys

from pvt_mm.doc_blocks import build_parser, main  # noqa: F401 (build_parser: tests/test_docs.py)

if __name__ == '__main__':
    sys.exit(main())
