"""Layers as Modules that own their parameters (``import minseg.nn as nn``); ``nn.init`` fills parameters."""
from . import init  # noqa: F401
from .layers import *  # noqa: F401,F403
from .linear import Linear  # noqa: F401
from .module import *  # noqa: F401,F403
from .sync_batchnorm import SyncBatchNorm  # noqa: F401
