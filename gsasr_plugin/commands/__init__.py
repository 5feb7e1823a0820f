"""Subcommands of the ``basicsr`` console script: ``run(args)`` with the arguments parsed by ``gsasr_plugin_cli``."""
