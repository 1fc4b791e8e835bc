from torch import nn

from distill.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss")
