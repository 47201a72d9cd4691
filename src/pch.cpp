// Compiles the precompiled header once for every part that reuses it.
