"""The encoder-decoder models ``python -m train`` builds, with named layers.

The default is the seed's: one-hot characters, one LSTM a side. The options
build the rest of the family export supports: GRU, Embedding inputs (with
``mask_zero``), a bidirectional encoder and stacked layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from family.kinds import ATTENTION, CELLS


@dataclass(frozen=True)
class Architecture:
    # "lstm" or "gru".
    cell: str = "lstm"
    # Recurrent layers on each side; encoder layer i starts decoder layer i.
    layers: int = 1
    # A Bidirectional encoder (merge_mode="concat"); the decoder is twice as wide.
    bidirectional: bool = False
    # Embedding width on both sides; 0 feeds one-hot rows instead.
    embedding_dim: int = 0
    # Embedding(mask_zero=True): the encoder skips padding (id 0).
    mask: bool = False
    # "each": encoder layer i starts decoder layer i; "last": only the top encoder
    # layer's state is handed over, to a one-layer decoder (a deep encoder).
    handoff: str = "each"
    # GRU only: Keras 3's default reset_after=True, or the original GRU (False).
    reset_after: bool = True
    # A linear Dense giving logits (trained with from_logits) instead of softmax.
    logits: bool = False
    # "" (none), "luong" or "bahdanau": the decoder's outputs attend over the top
    # encoder layer's outputs; context and decoder output are joined by
    # Concatenate, then Dense(tanh) (Luong's attentional hidden state).
    attention: str = ""
    # Keras's own input dropout inside every recurrent layer (``dropout=``), while
    # training only: export reads the weights, so the graphs are unchanged.
    dropout: float = 0.0

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {tuple(CELLS)}, got {self.cell!r}")
        if self.layers < 1 or self.embedding_dim < 0:
            raise ValueError("layers must be >= 1 and embedding_dim >= 0")
        if self.mask and not self.embedding_dim:
            raise ValueError("mask needs an Embedding (embedding_dim > 0)")
        if self.handoff not in ("each", "last"):
            raise ValueError(f"handoff must be each or last, got {self.handoff!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attention and self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {tuple(ATTENTION)}, got "
                             f"{self.attention!r}")


def _rnn(arch: Architecture, units: int, **kwargs):
    if arch.cell == "gru":
        kwargs["reset_after"] = arch.reset_after
    if arch.dropout:
        kwargs["dropout"] = arch.dropout
    return CELLS[arch.cell].keras_class(units, **kwargs)


def _input(name: str, size: int, arch: Architecture):
    if arch.embedding_dim:
        inp = keras.Input(shape=(None,), dtype="int32", name=name)
        return inp, layers.Embedding(size, arch.embedding_dim, mask_zero=arch.mask,
                                     name=f"{name}_embedding")(inp)
    inp = keras.Input(shape=(None, size), name=name)
    return inp, inp


def build_model(input_size: int, target_size: int, latent_dim: int = 256,
                arch: Architecture = Architecture(), optimizer: str = "rmsprop",
                learning_rate: float = 1e-3, label_smoothing: float = 0.0) -> keras.Model:
    """Encoder RNN(s) return their final state; decoder layer i starts from encoder
    layer i's (or one decoder layer from the top encoder layer's, ``handoff="last"``);
    teacher forcing; Dense softmax. Inputs are one-hot rows or ids. With attention,
    the top encoder layer also returns its sequence, which the decoder attends over."""
    kinds = 2 if arch.cell == "lstm" else 1
    suffix = (lambda i: "") if arch.layers == 1 else (lambda i: f"_{i}")
    encoder_inputs, x = _input("encoder_inputs", input_size, arch)
    states = []
    for i in range(arch.layers):
        top = i == arch.layers - 1
        rnn = _rnn(arch, latent_dim, return_sequences=not top or bool(arch.attention),
                   return_state=True, name=f"encoder_{arch.cell}{suffix(i)}")
        if arch.bidirectional:
            x, *both = layers.Bidirectional(rnn, name=f"encoder_bi{suffix(i)}")(x)
            states.append([layers.Concatenate(name=f"encoder_state{suffix(i)}_{k}")(
                [both[k], both[kinds + k]]) for k in range(kinds)])
        else:
            x, *state = rnn(x)
            states.append(state)
    memory = x
    decoder_inputs, x = _input("decoder_inputs", target_size, arch)
    width = latent_dim * (2 if arch.bidirectional else 1)
    if arch.handoff == "last":
        states = states[-1:]
    for i in range(len(states)):
        name = f"decoder_{arch.cell}" + (suffix(i) if len(states) > 1 else "")
        x, *_ = _rnn(arch, width, return_sequences=True, return_state=True, name=name)(
            x, initial_state=states[i])
    if arch.attention:  # memory: the top encoder layer's outputs (mask travels with it)
        context = ATTENTION[arch.attention](name="attention")([x, memory])
        x = layers.Concatenate(name="attention_concat")([context, x])
        x = layers.Dense(width, activation="tanh", name="attentional_hidden")(x)
    outputs = layers.Dense(target_size, activation=None if arch.logits else "softmax",
                           name="decoder_dense")(x)
    model = keras.Model([encoder_inputs, decoder_inputs], outputs, name="seq2seq")
    compile_model(model, arch.logits, optimizer, learning_rate, label_smoothing)
    return model


OPTIMIZERS = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}


def compile_model(model: keras.Model, logits: bool = False, optimizer: str = "rmsprop",
                  learning_rate: float = 1e-3, label_smoothing: float = 0.0) -> None:
    # RMSprop at Keras's default rate, as in the seed. The loss is the mean over real
    # target tokens (weight 1; padding has 0): Keras's default divides by every step
    # of the batch, padding included, so a batch's loss would depend on how far it is
    # padded. Weighted metrics, so padding steps do not count there either. Label
    # smoothing (Keras's own: the one-hot target mixed with the uniform distribution)
    # regularises a model that overfits; it changes the loss, never the graph.
    model.compile(optimizer=OPTIMIZERS[optimizer](learning_rate=learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(
                      from_logits=logits, label_smoothing=label_smoothing,
                      reduction="mean_with_sample_weight"),
                  weighted_metrics=["accuracy"])


@dataclass(frozen=True)
class TransformerArchitecture:
    """keras.io's KerasHub translation model: ``TokenAndPositionEmbedding`` (ids,
    ``mask_zero``), ``TransformerEncoder`` layers, and a decoder of
    ``TokenAndPositionEmbedding`` and ``TransformerDecoder`` layers (each attending
    over the top encoder layer's outputs), then Dense softmax (or logits)."""
    # Encoder layers, and as many decoder layers.
    layers: int = 2
    # Attention heads in every layer (the width must divide by it).
    heads: int = 4
    # The feed-forward block's inner width.
    ff_dim: int = 512
    # The model's width (token and position embeddings, every layer's output).
    embedding_dim: int = 128
    # Keras's dropout inside every layer, while training only.
    dropout: float = 0.1
    logits: bool = False
    # Train and export read token ids, and the encoder skips padding: what the
    # RNN family's Architecture calls embedding_dim > 0 and mask.
    mask: bool = True

    def __post_init__(self):
        if min(self.layers, self.heads, self.ff_dim, self.embedding_dim) < 1:
            raise ValueError("layers, heads, ff_dim and embedding_dim must be >= 1")
        if self.embedding_dim % self.heads:
            raise ValueError(f"the width {self.embedding_dim} must divide by the "
                             f"{self.heads} heads")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def build_transformer(input_size: int, target_size: int, input_length: int,
                      output_length: int, arch: TransformerArchitecture = TransformerArchitecture(),
                      optimizer: str = "adam", learning_rate: float = 1e-3,
                      label_smoothing: float = 0.0) -> keras.Model:
    """The KerasHub encoder-decoder (see TransformerArchitecture), inputs padded on the
    right (positions count from the first token). Exported with the cached step."""
    import warnings

    import keras_hub

    # KerasHub's layers hand masked tensors to sublayers that ignore masks on purpose
    # (the masks are applied as attention masks); Keras warns of each, to no use.
    warnings.filterwarnings("ignore", message=r"Layer '.*' \(of type .*\) was passed an "
                            "input with a mask attached", category=UserWarning)

    def embed(inputs, size, length, name):
        return keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size=size, sequence_length=length, embedding_dim=arch.embedding_dim,
            mask_zero=True, name=name)(inputs)

    encoder_inputs = keras.Input(shape=(None,), dtype="int32", name="encoder_inputs")
    x = embed(encoder_inputs, input_size, input_length, "encoder_embedding")
    for i in range(arch.layers):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=arch.ff_dim, num_heads=arch.heads, dropout=arch.dropout,
            name=f"encoder_transformer_{i}")(x)
    memory = x
    decoder_inputs = keras.Input(shape=(None,), dtype="int32", name="decoder_inputs")
    x = embed(decoder_inputs, target_size, output_length, "decoder_embedding")
    for i in range(arch.layers):
        x = keras_hub.layers.TransformerDecoder(
            intermediate_dim=arch.ff_dim, num_heads=arch.heads, dropout=arch.dropout,
            name=f"decoder_transformer_{i}")(decoder_sequence=x, encoder_sequence=memory)
    outputs = layers.Dense(target_size, activation=None if arch.logits else "softmax",
                           name="decoder_dense")(x)
    model = keras.Model([encoder_inputs, decoder_inputs], outputs, name="transformer")
    compile_model(model, arch.logits, optimizer, learning_rate, label_smoothing)
    return model
