"""The machinery of `train`: the loop (`fit`), its state, the watching, events and optimisers."""
