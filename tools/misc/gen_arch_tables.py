#!/usr/bin/env python
"""Write the arch-table blocks of the README and docs pages from the arch table.

    python tools/misc/gen_arch_tables.py [--check]

A thin wrapper over :func:`pvt_mm.arch_docs.main`: the pages' ``<!-- arch-table:NAME:begin -->``
/ ``end`` blocks are regenerated from ``pvt_mm/models/backbones/archs.py``; ``--check``
writes nothing and exits 1 naming each page that differs (the suite runs it).
"""
import sys

from pvt_mm.arch_docs import build_parser, main  # noqa: F401 (build_parser: tests/test_docs.py)

if __name__ == '__main__':
    sys.exit(main())
