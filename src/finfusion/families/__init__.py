"""Model families: one module per family (forecast, movement, portfolio) stating its config, samples, task,
predictions and scoring.
"""
