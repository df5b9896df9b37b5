"""One module per stage: a pure handler (event in → events out) and its consumer settings."""
