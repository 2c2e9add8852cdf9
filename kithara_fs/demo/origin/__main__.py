"""`python -m kithara_fs.demo.origin DIR`: serve a directory of files until interrupted.

Owns: only the entry point; the work is kithara_fs.demo.origin.standalone's.

Must never: be imported by the package: runpy warns when `-m` finds its module loaded.
"""

from kithara_fs.demo.origin.standalone import main

if __name__ == "__main__":
    raise SystemExit(main())
