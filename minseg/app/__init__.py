"""The application around the library: the ``minseg`` command line and the training run built from its options.

The library (autograd … models, data, ``train.Learner``, ``predict.Predictor``, metrics, viz) never imports
this package; this package imports the library. Options become library arguments here, and a mistake is
worded as the flag the user typed. Read in this order: ``cli`` (argparse, the three commands, error lines),
``run`` (``TrainingRun``: data, model, Learner, figures from the options of ``minseg train``), ``options``
(options → dataset splits and augmentation, errors worded as flags), ``files`` (reading images and writing
masks for ``minseg predict`` and ``minseg evaluate``), ``lock`` (one run per ``--out``), ``interrupt``
(SIGTERM handled as Ctrl-C), ``threads`` (how many BLAS threads to use).
"""
