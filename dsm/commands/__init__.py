"""The `dsm` subcommands: one thin module each (arguments, printing, exit codes)."""
