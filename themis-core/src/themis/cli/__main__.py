"""``python -m themis.cli``: the ``themis`` command line."""

from themis.cli import main

if __name__ == "__main__":
    main()
