"""Serving: versioned model store, idempotent batch jobs (ingest, features, train, finetune, predict), HTTP API."""
