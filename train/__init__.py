"""Training side: build and fit the seed's LSTM encoder-decoder (``python -m train``)."""
import os

# Quiet TensorFlow's C++ start-up chatter and pin Keras to the TensorFlow backend
# before anything imports them; a user's own settings win.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
