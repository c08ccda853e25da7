"""SpinBot: prompt + portrait + voice sample -> talking-head video."""

__version__ = "0.1.0"
