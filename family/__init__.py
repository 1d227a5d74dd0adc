"""The Keras side of the model family, shared by ``train``, ``export`` and
``benchmarks``: the table of cell and attention kinds (``kinds``), the reader
that finds a user's model's parts by structure (``structure``), the decoder
state's layout (``state``), the Keras reference decoder (``reference``), the
run directory's file names (``rundir``), the pair-file reader (``pairs``) and
the quality metrics the field reports (``quality``: chrF, BLEU, CER, WER).

Imports run one way: runtime <- family <- train, export <- benchmarks.
"""
