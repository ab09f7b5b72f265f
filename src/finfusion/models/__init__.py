"""Models: one file per model, one line each in registry.py; a family's parts share a folder (multimodal/, portfolio/,
movement/). Pure nn.Modules know nothing of training.
"""
