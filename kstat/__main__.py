"""`python -m kstat`: the same as the `kstat` command."""

from kstat._entry import main

if __name__ == "__main__":
    main()
