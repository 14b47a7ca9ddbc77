"""`python -m codex_trio`: the command line entry point.

The cyclic collector is off while the modules load and the server starts: start-up builds
long-lived objects only, and the collector's passes over them were ~3 % of the instructions
of a start that answers `initialize` and exits. The CLI freezes what start-up built and
turns the collector back on once the server listens (`cli.run_server`).
"""

import gc

if __name__ == "__main__":
    gc.disable()

from codex_trio.cli import main

if __name__ == "__main__":
    main()
