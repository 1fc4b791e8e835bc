"""The trainable modules: each a `forward(batch) -> {"loss": ..., ...}` that `train.fit` trains.

distiller.py       Distiller (student + teacher source + adapters + weighted terms) and Supervised
mutual.py          MutualLearning: teacher and peers trained together (online)
self_distiller.py  SelfDistiller and the born-again generations
token.py           NextToken, TokenDistiller, OnPolicy: a causal language model's stages
teacher.py         where a teacher's outputs come from: a live frozen model or a cache's rows
"""
