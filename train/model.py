"""The seed's LSTM encoder-decoder, with named layers."""
from __future__ import annotations

import keras
from keras import layers


def build_model(input_size: int, target_size: int, latent_dim: int = 256) -> keras.Model:
    """Encoder LSTM returns [h, c]; the decoder LSTM starts from them; Dense softmax.

    Inputs are one-hot rows: ``(None, input_size)`` for the encoder and
    ``(None, target_size)`` for the decoder (teacher forcing).
    """
    encoder_inputs = keras.Input(shape=(None, input_size), name="encoder_inputs")
    _, state_h, state_c = layers.LSTM(latent_dim, return_state=True,
                                      name="encoder_lstm")(encoder_inputs)
    decoder_inputs = keras.Input(shape=(None, target_size), name="decoder_inputs")
    sequence, _, _ = layers.LSTM(latent_dim, return_sequences=True, return_state=True,
                                 name="decoder_lstm")(decoder_inputs,
                                                      initial_state=[state_h, state_c])
    outputs = layers.Dense(target_size, activation="softmax", name="decoder_dense")(sequence)
    model = keras.Model([encoder_inputs, decoder_inputs], outputs, name="seq2seq")
    compile_model(model)
    return model


def compile_model(model: keras.Model) -> None:
    # As in the seed; weighted metrics so padding steps (weight 0) do not count.
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy",
                  weighted_metrics=["accuracy"])
