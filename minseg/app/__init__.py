"""The application around the library: the ``minseg`` command line and the training run built from its options.

The library (autograd … models, data, ``train.Learner``, ``predict.Predictor``, metrics, viz) never imports
this package; this package imports the library. Options become library arguments here, and a mistake is worded
as the flag the user typed. Read in this order: ``console`` (the console script: ``cli`` imported where Ctrl-C
is caught), ``cli`` (argparse, the three commands, error lines), ``values`` (what each option accepts, with
its bounds), ``run`` (``TrainingRun``: data, model, Learner, figures from the options of ``minseg train``),
``options`` (options → dataset splits and augmentation, the files named checked, errors worded as flags),
``files`` (reading images and writing masks for ``minseg predict`` and ``minseg evaluate``, never over a file
the user did not ask to replace), ``lock`` (one run per ``--out``), ``interrupt`` (SIGTERM handled as Ctrl-C),
``ranks`` (``mpiexec``: one communicator, and a failure on one rank ends every rank), ``threads`` (how many
BLAS threads to use).
"""
