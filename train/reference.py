"""The native Keras reference decoder, the keras.io way: an encoder model,
a single-step decoder model, and a greedy loop in Python.

Export's parity checks and the benchmarks compare everything against it.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from runtime.vocab import Vocabulary

from .structure import CELLS, cell_of, check_vocabulary, locate


def _stepping_layer(rnn):
    """The decoder RNN returning its state. keras.io's GRU decoder has no
    ``return_state``: then a Keras copy with it, holding the trained weights."""
    if rnn.return_state:
        return rnn
    config = {**rnn.get_config(), "return_state": True, "name": f"{rnn.name}_stepping"}
    clone = CELLS[cell_of(rnn)][0].from_config(config)
    clone.build(rnn.input_spec[0].shape if rnn.input_spec else (None, None, None))
    clone.set_weights(rnn.get_weights())
    return clone


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
        state_in = [keras.Input(shape=(latent,), name=k) for k in parts.state_kinds]
        seq, *state_out = _stepping_layer(parts.decoder_rnn)(token, initial_state=state_in)
        out = parts.dense(seq)
        if parts.logits:  # the runtime's probs are always probabilities
            out = keras.layers.Softmax()(out)
        self.decoder = keras.Model([token, *state_in], [out, *state_out],
                                   name="reference_decoder_step")

    # Two ways of calling a Keras model, kept so the benchmarks can compare them.
    def _run(self, model, inputs, mode: str) -> list[np.ndarray]:
        out = model.predict(inputs, verbose=0) if mode == "predict" else model(
            inputs, training=False)
        return [np.asarray(x) for x in (out if isinstance(out, (list, tuple)) else [out])]

    def encode(self, one_hot: np.ndarray, mode: str = "call") -> tuple:
        """The decoder's initial state: a tuple of ``[batch, latent]`` arrays."""
        return tuple(self._run(self.encoder, one_hot, mode))

    def step(self, token_ids: np.ndarray, state: tuple, mode: str = "call"):
        """``(probs [batch, targets], state)`` after one decoder step."""
        x = self.vocab.one_hot_targets(token_ids.reshape(-1, 1))
        probs, *state = self._run(self.decoder, [x, *state], mode)
        return probs[:, 0, :], tuple(state)

    def greedy_ids(self, texts: Sequence[str], mode: str = "call",
                   max_length: int | None = None) -> list[list[int]]:
        """Greedy token ids per text (end token excluded)."""
        vocab = self.vocab
        steps = max_length or vocab.max_output_length
        state = self.encode(vocab.one_hot_inputs(vocab.encode_inputs(texts)), mode)
        tokens = np.full(len(texts), vocab.start_id, dtype=np.int64)
        out = [[] for _ in texts]
        done = np.zeros(len(texts), dtype=bool)
        for _ in range(steps):
            probs, state = self.step(tokens, state, mode)
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
