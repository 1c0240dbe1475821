"""``python -m streamdetect.cli``: the same command as the ``streamdetect`` script."""

from streamdetect.cli.main import main

main()
