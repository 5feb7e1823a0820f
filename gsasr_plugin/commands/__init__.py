"""Subcommands of the ``basicsr`` console script (see ``gsasr_plugin.cli``)."""
