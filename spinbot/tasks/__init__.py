"""The python-plane tasks, one module each (`tts`, `talk`, `upscale`: a params model and the seed's workflow around
a backend), and what they share: `base` (TaskContext, NodeOutput, params validation), `catalog` (every task name)."""
