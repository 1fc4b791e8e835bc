"""Teacher outputs stored once: `logits.py` (a classifier's logits, features and augmented views, in shards) and
`tokens.py` (a language model's top-k next-token distributions). Each is refused when its fingerprint no
longer matches the teacher and data it was made from."""
