"""Small runnable demonstrations of what the library's tools are for.

    python -m minicnn.demos.transfer_mnist      transfer learning on MNIST (digits 0–4 → 5–9)
"""
