"""keras.io's "English-to-Spanish translation with a sequence-to-sequence Transformer"
(fchollet), written here in that example's own style as its Keras 3 form runs it
(``keras.ops``, masks through ``compute_mask``), shrunk to tiny sizes and a made-up
task that trains in seconds: English digit words to Spanish ones, reversed, so the
decoder must attend across the source.

Its pieces are the example's: ``TextVectorization`` on both sides (the target's with
the example's ``custom_standardization``), ``PositionalEmbedding``,
``TransformerEncoder`` and ``TransformerDecoder`` on ``MultiHeadAttention``, the
functional model ``[encoder_inputs, decoder_inputs] -> softmax``, and
``decode_sequence``, the example's own decode loop (the answer key of the tests).
The layers have the example's ``get_config`` and are registered here (the example
does not register them), so a saved model reloads where this module is imported:
``python -m export model.keras --import benchmarks.keras_io_transformer``.
"""
import random, re, string
import numpy as np
import tensorflow as tf
import keras
from keras import layers, ops
from keras.layers import TextVectorization

EN = "zero one two three four five six seven eight nine".split()
ES = "cero uno dos tres cuatro cinco seis siete ocho nueve".split()


def make_pairs(n, seed=0):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        k = rng.randint(1, 5)
        idx = [rng.randrange(10) for _ in range(k)]
        eng = " ".join(EN[i] for i in idx).capitalize() + "."
        spa = "[start] " + " ".join(ES[i] for i in reversed(idx)) + "! [end]"
        pairs.append((eng, spa))
    return pairs

strip_chars = string.punctuation + "¿"
strip_chars = strip_chars.replace("[", "")
strip_chars = strip_chars.replace("]", "")
vocab_size = 14
sequence_length = 8
batch_size = 64


def custom_standardization(input_string):
    lowercase = tf.strings.lower(input_string)
    return tf.strings.regex_replace(lowercase, "[%s]" % re.escape(strip_chars), "")


@keras.saving.register_keras_serializable(package="keras_io_transformer")
class TransformerEncoder(layers.Layer):
    def __init__(self, embed_dim, dense_dim, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.dense_dim = dense_dim
        self.num_heads = num_heads
        self.attention = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.dense_proj = keras.Sequential(
            [layers.Dense(dense_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm_1 = layers.LayerNormalization()
        self.layernorm_2 = layers.LayerNormalization()
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            padding_mask = ops.cast(mask[:, None, :], dtype="int32")
        else:
            padding_mask = None
        attention_output = self.attention(query=inputs, value=inputs, key=inputs,
                                          attention_mask=padding_mask)
        proj_input = self.layernorm_1(inputs + attention_output)
        proj_output = self.dense_proj(proj_input)
        return self.layernorm_2(proj_input + proj_output)

    def get_config(self):
        config = super().get_config()
        config.update({"embed_dim": self.embed_dim,
                       "dense_dim": self.dense_dim,
                       "num_heads": self.num_heads})
        return config


@keras.saving.register_keras_serializable(package="keras_io_transformer")
class PositionalEmbedding(layers.Layer):
    def __init__(self, sequence_length, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_embeddings = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.position_embeddings = layers.Embedding(input_dim=sequence_length,
                                                    output_dim=embed_dim)
        self.sequence_length = sequence_length
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim

    def call(self, inputs):
        length = ops.shape(inputs)[-1]
        positions = ops.arange(0, length, 1)
        embedded_tokens = self.token_embeddings(inputs)
        embedded_positions = self.position_embeddings(positions)
        return embedded_tokens + embedded_positions

    def compute_mask(self, inputs, mask=None):
        return ops.not_equal(inputs, 0)

    def get_config(self):
        config = super().get_config()
        config.update({"sequence_length": self.sequence_length,
                       "vocab_size": self.vocab_size,
                       "embed_dim": self.embed_dim})
        return config


@keras.saving.register_keras_serializable(package="keras_io_transformer")
class TransformerDecoder(layers.Layer):
    def __init__(self, embed_dim, latent_dim, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = embed_dim
        self.latent_dim = latent_dim
        self.num_heads = num_heads
        self.attention_1 = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.attention_2 = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.dense_proj = keras.Sequential(
            [layers.Dense(latent_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm_1 = layers.LayerNormalization()
        self.layernorm_2 = layers.LayerNormalization()
        self.layernorm_3 = layers.LayerNormalization()
        self.supports_masking = True

    def call(self, inputs, mask=None):
        inputs, encoder_outputs = inputs
        causal_mask = self.get_causal_attention_mask(inputs)
        if mask is None:
            inputs_padding_mask, encoder_outputs_padding_mask = None, None
        else:
            inputs_padding_mask, encoder_outputs_padding_mask = mask
        attention_output_1 = self.attention_1(query=inputs, value=inputs, key=inputs,
                                              attention_mask=causal_mask,
                                              query_mask=inputs_padding_mask)
        out_1 = self.layernorm_1(inputs + attention_output_1)
        attention_output_2 = self.attention_2(query=out_1, value=encoder_outputs,
                                              key=encoder_outputs,
                                              query_mask=inputs_padding_mask,
                                              key_mask=encoder_outputs_padding_mask)
        out_2 = self.layernorm_2(out_1 + attention_output_2)
        proj_output = self.dense_proj(out_2)
        return self.layernorm_3(out_2 + proj_output)

    def get_causal_attention_mask(self, inputs):
        input_shape = ops.shape(inputs)
        batch_size, sequence_length = input_shape[0], input_shape[1]
        i = ops.arange(sequence_length)[:, None]
        j = ops.arange(sequence_length)
        mask = ops.cast(i >= j, dtype="int32")
        return ops.broadcast_to(mask, (batch_size, sequence_length, sequence_length))

    def get_config(self):
        config = super().get_config()
        config.update({"embed_dim": self.embed_dim,
                       "latent_dim": self.latent_dim,
                       "num_heads": self.num_heads})
        return config


def build(embed_dim=16, latent_dim=32, num_heads=2, sequence_length=sequence_length,
          vocab_size=vocab_size):
    encoder_inputs = keras.Input(shape=(None,), dtype="int64", name="encoder_inputs")
    x = PositionalEmbedding(sequence_length, vocab_size, embed_dim)(encoder_inputs)
    encoder_outputs = TransformerEncoder(embed_dim, latent_dim, num_heads)(x)
    decoder_inputs = keras.Input(shape=(None,), dtype="int64", name="decoder_inputs")
    x = PositionalEmbedding(sequence_length, vocab_size, embed_dim)(decoder_inputs)
    x = TransformerDecoder(embed_dim, latent_dim, num_heads)([x, encoder_outputs])
    x = layers.Dropout(0.5)(x)
    decoder_outputs = layers.Dense(vocab_size, activation="softmax")(x)
    return keras.Model([encoder_inputs, decoder_inputs], decoder_outputs, name="transformer")


def train(epochs=10, n=3000, seed=0):
    keras.utils.set_random_seed(seed)
    pairs = make_pairs(n, seed)
    eng_vectorization = TextVectorization(max_tokens=vocab_size, output_mode="int",
                                          output_sequence_length=sequence_length)
    spa_vectorization = TextVectorization(max_tokens=vocab_size, output_mode="int",
                                          output_sequence_length=sequence_length + 1,
                                          standardize=custom_standardization)
    eng_vectorization.adapt([p[0] for p in pairs])
    spa_vectorization.adapt([p[1] for p in pairs])

    def format_dataset(eng, spa):
        eng = eng_vectorization(eng)
        spa = spa_vectorization(spa)
        return ({"encoder_inputs": eng, "decoder_inputs": spa[:, :-1]}, spa[:, 1:])

    eng_texts, spa_texts = zip(*pairs)
    ds = tf.data.Dataset.from_tensor_slices((list(eng_texts), list(spa_texts)))
    ds = ds.batch(batch_size).map(format_dataset).cache()
    transformer = build()
    transformer.compile("rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    transformer.fit(ds, epochs=epochs, verbose=0)
    return transformer, eng_vectorization, spa_vectorization, pairs


def decode_sequence(transformer, eng_vectorization, spa_vectorization, input_sentence,
                    max_decoded_sentence_length=sequence_length):
    spa_vocab = spa_vectorization.get_vocabulary()
    spa_index_lookup = dict(zip(range(len(spa_vocab)), spa_vocab))
    tokenized_input_sentence = eng_vectorization([input_sentence])
    decoded_sentence = "[start]"
    for i in range(max_decoded_sentence_length):
        tokenized_target_sentence = spa_vectorization([decoded_sentence])[:, :-1]
        predictions = transformer([tokenized_input_sentence, tokenized_target_sentence])
        sampled_token_index = np.argmax(predictions[0, i, :])
        sampled_token = spa_index_lookup[sampled_token_index]
        decoded_sentence += " " + sampled_token
        if sampled_token == "[end]":
            break
    return decoded_sentence
