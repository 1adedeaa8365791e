"""The ``numbaconv`` command line (installed as the importable package ``numbaconv_cli``)."""
