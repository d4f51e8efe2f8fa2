"""Generators of ±1 spins behind one interface: init, chunked resumable training, sample,
and log_prob where the model has one."""
