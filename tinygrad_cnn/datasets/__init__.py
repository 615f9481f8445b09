"""Data files shipped with tinygrad_cnn (see ``MNIST_MINI.md``); read them via ``.data``."""
