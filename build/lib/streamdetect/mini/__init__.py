"""The mini domain: synthetic scenes, small trained models shipped in weights/, attacks on them
and the evaluation that measures detection (issue 5). Importing this package is cheap; the
modules that need torch are imported where they are used."""

ATTACKS = ("pgd", "transfer", "adaptive")
