"""Layers as Modules that own their parameters (``import minseg.nn as nn``)."""
from .layers import *  # noqa: F401,F403
from .module import *  # noqa: F401,F403
