"""Method plugins: one file per method (they arrive with the rollout and training issues)."""
