"""Models: one file per model, registered by name in registry.py. Pure nn.Modules know nothing of training."""
