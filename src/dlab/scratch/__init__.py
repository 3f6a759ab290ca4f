"""Every formula of the teaching material as NumPy code with a hand-written backward pass.

NumPy only, float64, no torch: this package is the oracle of the teaching story. Each layer is a
pair `*_forward(...) -> (output, cache)` and `*_backward(d_output, cache) -> gradients`, with
torch's parameter layouts (W is (out, in); LSTM gates i, f, g, o; GRU gates r, z, n) so weights
can be copied both ways. `dlab check` compares all of it with PyTorch.
"""
