"""The trainer: spec (torch-free), technique catalogue (torch-free), components, training and evaluation."""
