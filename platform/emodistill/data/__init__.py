"""Data: the Parquet dataset contract, audio decoding, corpora, synthesis, ingest, reading.

Everything downstream (training, tuning, evaluation, serving) reads audio through
`emodistill.data.audio`, so training and inference decode exactly alike.
"""
