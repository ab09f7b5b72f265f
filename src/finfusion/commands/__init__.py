"""Sub-commands of the `finfusion` command line."""
