"""Applications built on the tinyinterp library (not part of the installed package)."""
