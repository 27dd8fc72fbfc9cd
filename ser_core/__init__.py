"""ser_core: the speech-emotion-recognition engine (no UI).

Import the submodule you need (``ser_core.audio``, ``ser_core.predict``, ...);
this package import itself stays light and never loads TensorFlow.
"""
__version__ = "0.1.0"
