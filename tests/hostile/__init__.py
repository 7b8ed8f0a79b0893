"""The hostile audit's corpus, replayed against the real stack on every run."""
