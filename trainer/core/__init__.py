"""The model core, free of Ray: the configuration and its presets, models, losses, the
training engine with its callbacks and optimizer, and full-ranking evaluation and top-k."""
