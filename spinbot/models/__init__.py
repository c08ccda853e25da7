"""The native backends' model files: where each comes from (manifest), what each backend needs and the key layout
it expects (layouts/), header-only checks (headers, compare), downloads (pull), and the `spinbot models` commands
(cli). Nothing here runs at job time: the backends only read files that are already in SPINBOT_MODELS_DIR."""
