"""The native f5_to_tts backend: F5-TTS (the f5-tts package, `pip install -e '.[gpu]'`) with local files only."""
