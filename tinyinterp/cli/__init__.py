"""The ``tinyinterp`` command line (argparse)."""
