"""Fraud scoring service: prediction.request -> prediction.completed, champion/challenger by alias."""
