"""Built-in loopback origin and generated audio, for `kithara-fs demo` and the tests."""
