"""``fermyon:spin/llm`` for the shim: local llama.cpp, remote HTTP backends, and node detection.

Nothing in this package imports the heavy inference libraries (llama-cpp-python, numpy, tokenizers,
safetensors) at module import time: they are the optional ``kubespin[llm]`` extra, and a shim
without them must still start and serve every other route of an app.
"""
