"""Evidence: the front against simple baselines, and how well proxies rank fine-tuned accuracy."""
