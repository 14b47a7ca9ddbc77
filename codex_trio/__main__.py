"""`python -m codex_trio`: the command line entry point."""

from codex_trio.cli import main

if __name__ == "__main__":
    main()
