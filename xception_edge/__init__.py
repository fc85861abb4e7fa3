"""xception-edge: convert, quantize and check Xception image classifiers for edge targets."""

__version__ = "0.1.0"
