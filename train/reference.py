"""The native Keras reference decoder, the keras.io way: an encoder model,
a single-step decoder model, and a greedy loop in Python.

Export's parity checks and the benchmarks compare everything against it.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from runtime.vocab import Vocabulary

from .structure import check_vocabulary, locate


class ReferenceDecoder:
    def __init__(self, model: keras.Model, vocab: Vocabulary):
        parts = locate(model)
        check_vocabulary(parts, vocab)
        self.vocab = vocab
        self.parts = parts
        self.encoder = keras.Model(parts.encoder_input, list(parts.encoder_states),
                                   name="reference_encoder")
        latent = parts.latent_dim
        token = keras.Input(shape=(None, vocab.target_size), name="token")
        h_in = keras.Input(shape=(latent,), name="h")
        c_in = keras.Input(shape=(latent,), name="c")
        seq, h_out, c_out = parts.decoder_lstm(token, initial_state=[h_in, c_in])
        probs = parts.dense(seq)
        self.decoder = keras.Model([token, h_in, c_in], [probs, h_out, c_out],
                                   name="reference_decoder_step")

    # Two ways of calling a Keras model, kept so the benchmarks can compare them.
    def _run(self, model, inputs, mode: str):
        if mode == "predict":
            return [np.asarray(x) for x in model.predict(inputs, verbose=0)]
        return [np.asarray(x) for x in model(inputs, training=False)]

    def encode(self, one_hot: np.ndarray, mode: str = "call"):
        h, c = self._run(self.encoder, one_hot, mode)
        return h, c

    def step(self, token_ids: np.ndarray, h: np.ndarray, c: np.ndarray, mode: str = "call"):
        x = self.vocab.one_hot_targets(token_ids.reshape(-1, 1))
        probs, h, c = self._run(self.decoder, [x, h, c], mode)
        return probs[:, 0, :], h, c

    def greedy_ids(self, texts: Sequence[str], mode: str = "call",
                   max_length: int | None = None) -> list[list[int]]:
        """Greedy token ids per text (end token excluded)."""
        vocab = self.vocab
        steps = max_length or vocab.max_output_length
        h, c = self.encode(vocab.one_hot_inputs(vocab.encode_inputs(texts)), mode)
        tokens = np.full(len(texts), vocab.start_id, dtype=np.int64)
        out = [[] for _ in texts]
        done = np.zeros(len(texts), dtype=bool)
        for _ in range(steps):
            probs, h, c = self.step(tokens, h, c, mode)
            tokens = probs.argmax(axis=-1)
            for i in np.flatnonzero(~done):
                if tokens[i] == vocab.end_id:
                    done[i] = True
                else:
                    out[i].append(int(tokens[i]))
            if done.all():
                break
        return out

    def greedy(self, texts: Sequence[str], mode: str = "call", batch_size: int = 512,
               max_length: int | None = None) -> list[str]:
        """Greedy decodes of ``texts``, in batches of ``batch_size``."""
        results: list[str] = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            for ids in self.greedy_ids(chunk, mode, max_length):
                results.append("".join(self.vocab.target_tokens[i] for i in ids))
        return results
