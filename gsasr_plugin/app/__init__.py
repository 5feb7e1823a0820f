"""``basicsr app``: a local web page (Gradio) to super-resolve an image at any scale on a slider, re-rendered from
its cached Gaussians. :mod:`~gsasr_plugin.app.engine` does the work (no Gradio); :mod:`~gsasr_plugin.app.page`
builds the page on it; ``gsasr_plugin.commands.app`` serves it. Gradio is the optional extra ``[app]``.
"""
