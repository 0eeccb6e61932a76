"""Ray: Train workers over user shards, the item-gradient exchange, and Tune searches."""
