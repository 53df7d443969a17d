"""Built-in tasks (model + data) for the demo, benchmarks and the FL harness.

A task module provides ``make_model()``, ``client_datasets(num_clients, ...)`` and
``test_dataset()``; users plug in their own module with the same three functions.
"""
