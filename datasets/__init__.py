"""Datasets: the training-set loader, `pstyle dataset` conversion and the synthetic sets the project makes itself."""
