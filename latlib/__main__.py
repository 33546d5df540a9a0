"""``python -m latlib ...``: the command line lives in ``latlib.pipeline.cli``."""

from latlib.pipeline.cli import main

if __name__ == "__main__":
    main()
