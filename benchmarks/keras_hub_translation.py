"""keras.io's "English-to-Spanish translation with KerasHub" (Abheesht Sharma), written
here in that example's own style, shrunk to tiny sizes and the made-up task of
``benchmarks.keras_io_transformer`` (English digit words to Spanish ones, reversed),
so that it trains in seconds.

Its model is the example's: ``keras_hub.layers.TokenAndPositionEmbedding`` and
``TransformerEncoder`` make ``encoder``; ``TokenAndPositionEmbedding``,
``TransformerDecoder``, ``Dropout`` and a softmax ``Dense`` make ``decoder``, a model
of its own called on the encoder's outputs inside ``transformer``. Its decode loop is
the example's ``decode_sequences``: ``keras_hub.samplers.GreedySampler`` driven by a
``next`` function that runs the whole model on the prompt and reads position
``index - 1`` (the answer key of the tests).

One piece differs: the example tokenizes with ``WordPieceTokenizer``. The runtime's
vocabularies are characters or words, so here ``TextVectorization`` splits words
(with the example's ``[PAD]``/``[START]``/``[END]`` roles: padding id 0, start and
end tokens) and the vocabulary is recorded by ``export.from_text_vectorization``.
"""
import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras import ops
from keras.layers import TextVectorization

from benchmarks.keras_io_transformer import make_pairs

BATCH_SIZE = 64
MAX_SEQUENCE_LENGTH = 8
VOCAB_SIZE = 14


def build(embed_dim=16, intermediate_dim=32, num_heads=2, num_layers=1,
          eng_vocab_size=VOCAB_SIZE, spa_vocab_size=VOCAB_SIZE, dropout=0.5,
          sequence_length=MAX_SEQUENCE_LENGTH):
    # Encoder
    encoder_inputs = keras.Input(shape=(None,), name="encoder_inputs")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size=eng_vocab_size,
        sequence_length=sequence_length,
        embedding_dim=embed_dim,
    )(encoder_inputs)
    for _ in range(num_layers):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=intermediate_dim, num_heads=num_heads
        )(inputs=x)
    encoder_outputs = x
    encoder = keras.Model(encoder_inputs, encoder_outputs)

    # Decoder
    decoder_inputs = keras.Input(shape=(None,), name="decoder_inputs")
    encoded_seq_inputs = keras.Input(shape=(None, embed_dim), name="decoder_state_inputs")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size=spa_vocab_size,
        sequence_length=sequence_length,
        embedding_dim=embed_dim,
    )(decoder_inputs)
    for _ in range(num_layers):
        x = keras_hub.layers.TransformerDecoder(
            intermediate_dim=intermediate_dim, num_heads=num_heads
        )(decoder_sequence=x, encoder_sequence=encoded_seq_inputs)
    x = keras.layers.Dropout(dropout)(x)
    decoder_outputs = keras.layers.Dense(spa_vocab_size, activation="softmax")(x)
    decoder = keras.Model([decoder_inputs, encoded_seq_inputs], decoder_outputs)
    decoder_outputs = decoder([decoder_inputs, encoder_outputs])

    transformer = keras.Model(
        [encoder_inputs, decoder_inputs], decoder_outputs, name="transformer"
    )
    return transformer


def vectorizers(pairs):
    eng = TextVectorization(max_tokens=VOCAB_SIZE, output_mode="int",
                            output_sequence_length=MAX_SEQUENCE_LENGTH)
    spa = TextVectorization(max_tokens=VOCAB_SIZE, output_mode="int",
                            output_sequence_length=MAX_SEQUENCE_LENGTH + 1,
                            standardize="lower")
    eng.adapt([p[0] for p in pairs])
    spa.adapt([p[1] for p in pairs])
    return eng, spa


def spanish(pairs):
    """The targets as ``[start] words [end]``, without the other task's "!"."""
    return [(e, s.replace("!", "")) for e, s in pairs]


def train(epochs=12, n=3000, seed=0, **sizes):
    keras.utils.set_random_seed(seed)
    pairs = spanish(make_pairs(n, seed))
    eng_tokenizer, spa_tokenizer = vectorizers(pairs)

    def preprocess_batch(eng, spa):
        eng = eng_tokenizer(eng)
        spa = spa_tokenizer(spa)
        return ({"encoder_inputs": eng, "decoder_inputs": spa[:, :-1]}, spa[:, 1:])

    eng_texts, spa_texts = zip(*pairs)
    ds = tf.data.Dataset.from_tensor_slices((list(eng_texts), list(spa_texts)))
    ds = ds.batch(BATCH_SIZE).map(preprocess_batch).cache()
    transformer = build(**sizes)
    transformer.compile("rmsprop", loss="sparse_categorical_crossentropy",
                        metrics=["accuracy"])
    transformer.fit(ds, epochs=epochs, verbose=0)
    return transformer, eng_tokenizer, spa_tokenizer, pairs


def decode_sequences(transformer, eng_tokenizer, spa_tokenizer, input_sentences,
                     length=MAX_SEQUENCE_LENGTH):
    """The example's loop: ``GreedySampler`` over the whole model, one prompt row."""
    batch_size = 1
    spa_vocab = spa_tokenizer.get_vocabulary()

    # Tokenize the encoder input.
    encoder_input_tokens = ops.convert_to_tensor(eng_tokenizer(input_sentences))

    # Define a function that outputs the next token's probability given the
    # input sequence.
    def next(prompt, cache, index):
        logits = transformer([encoder_input_tokens, prompt])[:, index - 1, :]
        # Ignore hidden states for now; only needed for contrastive search.
        hidden_states = None
        return logits, hidden_states, cache

    # Build a prompt of length MAX_SEQUENCE_LENGTH with a start token and padding
    # tokens.
    start = ops.full((batch_size, 1), spa_vocab.index("[start]"), dtype="int32")
    pad = ops.full((batch_size, length - 1), 0, dtype="int32")
    prompt = ops.concatenate((start, pad), axis=-1)

    generated_tokens = keras_hub.samplers.GreedySampler()(
        next,
        prompt,
        stop_token_ids=[spa_vocab.index("[end]")],
        index=1,  # Start sampling after start token.
    )
    tokens = np.asarray(generated_tokens)[0, 1:]
    words = [spa_vocab[t] for t in tokens if t != 0]
    return " ".join(words[:words.index("[end]")] if "[end]" in words else words)
