"""The parts of the relevance family (seed 004): predictions, baselines, feature-group importance and evaluation."""
