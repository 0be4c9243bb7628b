"""``python -m hanasc.cli``: the ``hanasc`` command."""

from hanasc.cli.app import main

if __name__ == "__main__":
    main()
