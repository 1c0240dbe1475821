"""The ``streamdetect`` command: thin click commands, one file per group, over the other parts."""
