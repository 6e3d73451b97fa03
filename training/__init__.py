"""Training for STARS and its baselines: ``python -m training.train`` or ``training.train.train(config)``."""
